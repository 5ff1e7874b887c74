//! How deep an Avro datum nests, found before apache-avro decodes it.
//!
//! Under a recursive schema (a named type that contains itself) each level
//! of a datum costs as little as one payload byte and one level of
//! apache-avro's recursive decoder, so a payload could drive the decoder
//! (and the conversion to JSON) into a stack overflow. For such schemas the
//! datum is first walked here, with a recursion that stops at
//! [`MAX_AVRO_DEPTH`] records, arrays and maps, and at [`MAX_AVRO_ITEMS`]
//! items in all (a block count of zero-size items costs no bytes either).

use apache_avro::schema::{InnerDecimalSchema, Name, Names, UuidSchema};
use apache_avro::Schema;

use super::integral::Integral;

/// Deepest nesting of records, arrays and maps decoded under a recursive
/// schema.
pub const MAX_AVRO_DEPTH: usize = 64;

/// Most array and map items one datum under a recursive schema may hold.
pub const MAX_AVRO_ITEMS: u64 = 1 << 22;

/// The name of a named type that contains itself, if any.
pub(crate) fn recursive_type(schema: &Schema, names: &Names) -> Option<String> {
    fn walk<'a>(
        schema: &'a Schema,
        names: &'a Names,
        open: &mut Vec<&'a Name>,
        done: &mut Vec<&'a Name>,
    ) -> Option<String> {
        let named = match schema {
            Schema::Record(record) => Some(&record.name),
            Schema::Ref { name } => Some(name),
            Schema::Array(array) => return walk(&array.items, names, open, done),
            Schema::Map(map) => return walk(&map.types, names, open, done),
            Schema::Union(union) => {
                return union
                    .variants()
                    .iter()
                    .find_map(|variant| walk(variant, names, open, done))
            }
            _ => None,
        }?;
        if open.contains(&named) {
            return Some(named.fullname(None));
        }
        if done.contains(&named) {
            return None;
        }
        let body = match schema {
            Schema::Ref { name } => names.get(name)?,
            other => other,
        };
        let Schema::Record(record) = body else {
            return None;
        };
        open.push(named);
        let found = record
            .fields
            .iter()
            .find_map(|field| walk(&field.schema, names, open, done));
        open.pop();
        done.push(named);
        found
    }
    walk(schema, names, &mut Vec::new(), &mut Vec::new())
}

/// Checks that `datum` (of `schema`) nests at most [`MAX_AVRO_DEPTH`]
/// levels and holds at most [`MAX_AVRO_ITEMS`] items. A datum this walk
/// cannot read is left to the decoder, which reports it precisely.
pub(crate) fn check_depth(schema: &Schema, names: &Names, datum: &[u8]) -> Result<(), String> {
    let mut scan = Scan {
        input: datum,
        names,
        items: 0,
    };
    match scan.value(schema, 0) {
        Err(Stop::TooDeep) => Err(format!(
            "the datum nests deeper than {MAX_AVRO_DEPTH} levels"
        )),
        Err(Stop::TooMany) => Err(format!(
            "the datum holds more than {MAX_AVRO_ITEMS} array or map items"
        )),
        Err(Stop::Unreadable) | Ok(()) => Ok(()),
    }
}

enum Stop {
    TooDeep,
    TooMany,
    Unreadable,
}

struct Scan<'a> {
    input: &'a [u8],
    names: &'a Names,
    items: u64,
}

impl Scan<'_> {
    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        if self.input.len() < n {
            return Err(Stop::Unreadable);
        }
        self.input = &self.input[n..];
        Ok(())
    }

    fn long(&mut self) -> Result<i64, Stop> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.input.split_first().ok_or(Stop::Unreadable)?;
            self.input = rest;
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(Stop::Unreadable)
    }

    fn bytes(&mut self) -> Result<(), Stop> {
        let len = usize::try_from(self.long()?).map_err(|_| Stop::Unreadable)?;
        self.skip(len)
    }

    /// Reads the blocks of an array (`map` false) or map of `items`.
    fn blocks(&mut self, items: &Schema, map: bool, depth: usize) -> Result<(), Stop> {
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or(Stop::Unreadable)?;
                self.long()?; // the block's size in bytes
            }
            self.items = self.items.saturating_add(count.unsigned_abs());
            if self.items > MAX_AVRO_ITEMS {
                return Err(Stop::TooMany);
            }
            for _ in 0..count {
                if map {
                    self.bytes()?;
                }
                self.value(items, depth)?;
            }
        }
    }

    fn value(&mut self, schema: &Schema, depth: usize) -> Result<(), Stop> {
        if depth > MAX_AVRO_DEPTH {
            return Err(Stop::TooDeep);
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Enum(_) => self.long().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Bytes | Schema::String | Schema::BigDecimal => self.bytes(),
            Schema::Uuid(UuidSchema::Bytes | UuidSchema::String) => self.bytes(),
            Schema::Uuid(UuidSchema::Fixed(fixed)) | Schema::Fixed(fixed) => self.skip(fixed.size),
            Schema::Duration(_) => self.skip(12),
            Schema::Decimal(decimal) => match &decimal.inner {
                InnerDecimalSchema::Bytes => self.bytes(),
                InnerDecimalSchema::Fixed(fixed) => self.skip(fixed.size),
            },
            Schema::Union(union) => {
                let index = usize::try_from(self.long()?).map_err(|_| Stop::Unreadable)?;
                let variant = union.variants().get(index).ok_or(Stop::Unreadable)?;
                self.value(variant, depth)
            }
            Schema::Array(array) => self.blocks(&array.items, false, depth + 1),
            Schema::Map(map) => self.blocks(&map.types, true, depth + 1),
            Schema::Record(record) => record
                .fields
                .iter()
                .try_for_each(|field| self.value(&field.schema, depth + 1)),
            Schema::Ref { name } => {
                let named = self.names.get(name).ok_or(Stop::Unreadable)?;
                self.value(named, depth)
            }
            // The integer types: one varint each.
            other => match Integral::of(other) {
                Some(_) => self.long().map(drop),
                None => Err(Stop::Unreadable),
            },
        }
    }
}
