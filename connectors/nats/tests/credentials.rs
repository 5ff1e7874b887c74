//! NKey seeds and TLS against a real nats-server of our own: key pairs and
//! certificates are made at test time (`nkeys`, `rcgen`), never shipped.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use spate_connector::Record;
use spate_testsupport::nats::*;

fn record(i: usize) -> Record {
    Record {
        key: Some(Bytes::from(format!("k-{i}"))),
        payload: Bytes::from(format!("secret-free payload {i}")),
        headers: Default::default(),
        timestamp_ms: None,
    }
}

/// The error text of a sink build that must fail.
async fn sink_build_error(kind: &str, entries: &[(&str, &str)]) -> String {
    let (builder, errors) = read_sink(kind, entries);
    assert!(errors.is_empty(), "unexpected config errors: {errors:?}");
    match builder.expect("a builder").build().await {
        Ok(_) => panic!("the sink connected, but it must not"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- NKey

fn nkey_server(public_key: &str) -> Server {
    start_own_with_config(&format!(
        "authorization {{\n  users = [\n    {{ nkey: {public_key} }}\n  ]\n}}\n"
    ))
}

#[tokio::test]
async fn nkey_seed_authenticates_jetstream_source_and_sink() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let server = nkey_server(&user.public_key());

    // Set up the stream with a plain client using the same seed.
    let client = async_nats::ConnectOptions::with_nkey(seed.clone())
        .connect(server.url.as_str())
        .await
        .expect("test client connects with the seed");
    let base = unique("nkey");
    let stream = base.to_uppercase();
    let subject = format!("{base}.out");
    create_stream(&client, &stream, std::slice::from_ref(&subject)).await;

    let sink = sink(
        "jetstream",
        &[
            ("url", &server.url),
            ("subject", &subject),
            ("nkey_seed", &seed),
        ],
    )
    .await;
    for i in 0..3 {
        sink.write(record(i)).await.expect("acknowledged");
    }
    let builder = source_builder(
        "jetstream",
        &[
            ("url", &server.url),
            ("stream", &stream),
            ("durable", "nk"),
            ("nkey_seed", &seed),
        ],
    );
    let mut source = open(&*builder).await;
    let events = read_n(&mut *source, 3, 100).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.key.as_deref(), Some(format!("k-{i}").as_bytes()));
    }
    source.close().await.unwrap();

    // Without credentials the server says no, and the error says what to set.
    let text = sink_build_error("nats", &[("url", &server.url), ("subject", "x")]).await;
    assert!(text.contains("requires credentials"), "{text}");
    assert!(text.contains("`nkey_seed`"), "{text}");
    delete_stream(&client, &stream).await;
}

#[tokio::test]
async fn a_wrong_nkey_seed_is_refused_without_showing_the_seed() {
    let user = nkeys::KeyPair::new_user();
    let server = nkey_server(&user.public_key());
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    let text = sink_build_error(
        "nats",
        &[
            ("url", &server.url),
            ("subject", "x"),
            ("nkey_seed", &stranger),
        ],
    )
    .await;
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(text.contains("check `nkey_seed`"), "{text}");
    assert!(text.contains(&server.url), "{text}");
    assert!(!text.contains(&stranger), "the seed leaked: {text}");
    assert!(
        !text.contains(&stranger[..12]),
        "part of the seed leaked: {text}"
    );
}

#[test]
fn nkey_seed_is_checked_at_load_without_echoing_it() {
    let user = nkeys::KeyPair::new_user();
    let account_seed = nkeys::KeyPair::new_account().seed().expect("seed");
    let user_seed = user.seed().expect("seed");
    let truncated = &user_seed[..40];
    let public_key = user.public_key();
    for (value, expected) in [
        (public_key.as_str(), "NKey public key"),
        (account_seed.as_str(), "not an NKey user seed"),
        (truncated, "not a whole NKey user seed"),
    ] {
        let (builder, errors) = read_sink("nats", &[("subject", "x"), ("nkey_seed", value)]);
        assert!(builder.is_none(), "{value} accepted");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let error = &errors[0];
        assert!(error.message.contains(expected), "{error:?}");
        assert_eq!(error.path, "outputs[0].nkey_seed");
        let hint = error.hint.clone().unwrap_or_default();
        assert!(hint.contains("`SU`"), "{hint}");
        let shown = format!("{} {hint}", error.message);
        assert!(!shown.contains(&value[..10]), "value echoed: {shown}");
    }
    // A good seed passes.
    let (builder, errors) = read_sink("nats", &[("subject", "x"), ("nkey_seed", &user_seed)]);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(builder.is_some());

    // It is one kind of credentials among the others, never two at once.
    let (builder, errors) = read_source(
        "nats",
        &[("subject", "x"), ("token", "t"), ("nkey_seed", &user_seed)],
    );
    assert!(builder.is_none());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].message,
        "more than one kind of NATS credentials is set"
    );
    assert!(
        errors[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("`nkey_seed`")),
        "{errors:?}"
    );
    assert!(!format!("{errors:?}").contains(&user_seed));
}

// ----------------------------------------------------------------- TLS

/// PEM files of a CA, a server certificate for 127.0.0.1/localhost and a
/// client certificate, all signed by that CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("PEM written");
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "spate test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        write("ca.pem", ca.pem());

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, file);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed");
            write(&format!("{file}.pem"), cert.pem());
            write(&format!("{file}-key.pem"), key.serialize_pem());
        };
        leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["spate-client".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );

        // A second CA that signed nothing of ours.
        let mut other = CertificateParams::new(Vec::<String>::new()).expect("params");
        other
            .distinguished_name
            .push(DnType::CommonName, "someone else's CA");
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other = other
            .self_signed(&KeyPair::generate().expect("key"))
            .expect("other CA");
        write("other-ca.pem", other.pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A server requiring TLS and a client certificate signed by our CA.
    fn mutual_tls_server(&self) -> Server {
        start_own_with_config(&format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem"),
        ))
    }
}

#[tokio::test]
async fn mutual_tls_round_trips_a_message() {
    let pki = Pki::new();
    let server = pki.mutual_tls_server();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem"),
    );
    let base = unique("tls");
    let subject = format!("{base}.a");
    let tls = [
        ("tls_ca_file", ca.as_str()),
        ("tls_cert_file", cert.as_str()),
        ("tls_key_file", key.as_str()),
    ];
    let mut source_config = vec![("url", server.url.as_str()), ("subject", subject.as_str())];
    source_config.extend(tls);
    let builder = source_builder("nats", &source_config);
    let mut source = open(&*builder).await;
    let plain_sink = sink("nats", &source_config).await;
    plain_sink.write(record(7)).await.expect("published");
    let events = read_n(&mut *source, 1, 10).await;
    assert_eq!(events[0].key.as_deref(), Some(b"k-7".as_slice()));
    source.close().await.unwrap();

    // The same through a `tls://` URL, which is fine with the files too.
    let tls_url = server.url.replace("nats://", "tls://");
    let mut config = vec![("url", tls_url.as_str()), ("subject", subject.as_str())];
    config.extend(tls);
    sink("nats", &config).await.write(record(8)).await.unwrap();
}

/// The error text of building a `nats` sink of a mutual-TLS server with
/// these files of `pki` (setting, file name) and `extra` settings.
async fn mutual_tls_sink_error(
    pki: &Pki,
    files: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> String {
    let server = pki.mutual_tls_server();
    let paths: Vec<(&str, String)> = files.iter().map(|(k, f)| (*k, pki.path(f))).collect();
    let mut settings = vec![("url", server.url.as_str()), ("subject", "x")];
    settings.extend(paths.iter().map(|(k, path)| (*k, path.as_str())));
    settings.extend_from_slice(extra);
    sink_build_error("nats", &settings).await
}

#[tokio::test]
async fn mutual_tls_without_the_client_certificate_fails_naming_tls() {
    let text = mutual_tls_sink_error(
        &Pki::new(),
        &[("tls_ca_file", "ca.pem")],
        &[("connect_timeout", "3s")],
    )
    .await;
    assert!(text.contains("TLS"), "{text}");
    assert!(text.contains("client certificate"), "{text}");
    assert!(text.contains("`tls_cert_file`"), "{text}");
}

#[tokio::test]
async fn an_untrusted_server_certificate_fails_naming_tls() {
    let files = [
        ("tls_ca_file", "other-ca.pem"),
        ("tls_cert_file", "client.pem"),
        ("tls_key_file", "client-key.pem"),
    ];
    let text = mutual_tls_sink_error(&Pki::new(), &files, &[]).await;
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(text.contains("`tls_ca_file`"), "{text}");
    assert!(!text.contains("BEGIN"), "{text}");
}

#[tokio::test]
async fn requiring_tls_of_a_plain_server_fails_naming_tls() {
    let server = start_own();
    let text = sink_build_error(
        "nats",
        &[
            ("url", &server.url),
            ("subject", "x"),
            ("tls_required", "true"),
        ],
    )
    .await;
    assert!(text.contains("TLS"), "{text}");
    assert!(text.contains("does not offer TLS"), "{text}");
}

#[tokio::test]
async fn a_key_file_without_a_key_is_named_without_its_contents() {
    let pki = Pki::new();
    // A certificate where the key should be.
    let files = [
        ("tls_ca_file", "ca.pem"),
        ("tls_cert_file", "client.pem"),
        ("tls_key_file", "client.pem"),
    ];
    let text = mutual_tls_sink_error(&pki, &files, &[]).await;
    assert!(text.contains("`tls_key_file`"), "{text}");
    assert!(text.contains(&pki.path("client.pem")), "{text}");
    assert!(text.contains("no readable PEM private key"), "{text}");
    assert!(!text.contains("MII"), "{text}");
}

#[test]
fn tls_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nope.pem");
    let missing = missing.display().to_string();
    let present = dir.path().join("cert.pem");
    std::fs::write(&present, "not checked until connecting").unwrap();
    let present = present.display().to_string();

    let (builder, errors) = read_sink(
        "nats",
        &[
            ("subject", "x"),
            ("tls_ca_file", &missing),
            ("tls_cert_file", &present),
        ],
    );
    assert!(builder.is_none());
    let msgs = messages(&errors);
    assert!(
        errors.iter().any(|e| e.path == "outputs[0].tls_ca_file"
            && e.message == format!("`tls_ca_file` file `{missing}` does not exist")),
        "{errors:?}"
    );
    assert_mentioned(&msgs, "missing required field `tls_key_file`");

    let dir_path = dir.path().display().to_string();
    let (_, errors) = read_sink("nats", &[("subject", "x"), ("tls_ca_file", &dir_path)]);
    assert!(
        messages(&errors)
            .iter()
            .any(|m| m.contains("is not a file")),
        "{errors:?}"
    );

    // `tls_required: false` cannot switch off what the files or URL imply.
    let (_, errors) = read_sink(
        "nats",
        &[
            ("url", "tls://127.0.0.1:4222"),
            ("subject", "x"),
            ("tls_required", "false"),
        ],
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("a `tls://` URL makes the connection TLS"),
        "{errors:?}"
    );

    let (builder, errors) = read_sink(
        "nats",
        &[
            ("subject", "x"),
            ("tls_required", "true"),
            ("tls_cert_file", &present),
            ("tls_key_file", &present),
        ],
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(builder.is_some());
    assert!(Path::new(&present).exists());
}
