//! Which expressions may run inline, on the handler's task: a conservative
//! static analysis of jaq's parse tree that proves an expression's work,
//! memory and output bounded by a constant times the size of the event
//! (which `serde_json` parsed, so it is at most 128 levels deep).
//! Everything it cannot prove goes to the [sandbox](super::sandbox).
//!
//! Each term gets a `Cost`: a weight `w` (work and total output size are
//! at most `w` times the input's size, plus a constant), a bound `k` on its
//! number of outputs (`None`: up to the size of the input, as `.[]`), and
//! whether it reads its input or a variable bound by `as`. The rules:
//!
//! - `a | b` multiplies weights; when `a` yields unboundedly many values,
//!   `b` must not read an `as` variable (each run would cost the whole
//!   variable again: `. as $all | .[] | $all` is quadratic);
//! - every construct that takes the cartesian product of its parts'
//!   outputs (`{a: x, b: y}`, `x + y`, `x == y`, `if`, interpolation, a
//!   builtin's arguments) may have at most one part with unboundedly many
//!   outputs, and then the others must be constant;
//! - `x as $v | body` needs `x` to yield a bounded number of values;
//! - `-`, `/`, `%` and `*` need a numeric literal on one side (array
//!   subtraction is quadratic; `*` repeats strings, so its literal
//!   multiplies the weight);
//! - assignments only to paths with literal indices;
//! - only the builtins in `builtin` below, each checked in jaq's definitions
//!   to be linear (or `n log n`, as `sort`) and not recursive;
//! - no `def`, `reduce`, `foreach`, `label`, `..`, computed indices, regex
//!   patterns that are not literal; at most [`MAX_INLINE_DEPTH`] levels,
//!   [`MAX_INLINE_NODES`] terms and a weight of [`MAX_INLINE_WEIGHT`].

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::ops::Math;
use jaq_core::path::{Part, Path};

/// Deepest parse tree run inline (the handler's task has a small stack).
pub const MAX_INLINE_DEPTH: usize = 48;

/// Most terms in an expression run inline.
pub const MAX_INLINE_NODES: usize = 400;

/// Largest weight (work per byte of input) of an expression run inline.
pub const MAX_INLINE_WEIGHT: u64 = 4096;

/// Largest numeric literal `*` may multiply by inline.
const MAX_FACTOR: f64 = 64.0;

/// Largest constant number of outputs tracked.
const MAX_COUNT: u64 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cost {
    w: u64,
    k: Option<u64>,
    reads: bool,
    bound: bool,
}

const CONSTANT: Cost = Cost {
    w: 1,
    k: Some(1),
    reads: false,
    bound: false,
};

const INPUT: Cost = Cost {
    w: 1,
    k: Some(1),
    reads: true,
    bound: false,
};

impl Cost {
    fn constant(&self) -> bool {
        !self.reads && !self.bound
    }
    fn times(self, factor: u64) -> Self {
        Self {
            w: self.w.saturating_mul(factor),
            ..self
        }
    }
}

/// Whether `term` (the parsed main expression) is proven bounded.
pub fn is_bounded(term: &Term<&str>) -> bool {
    let mut walk = Walk {
        scope: Vec::new(),
        nodes: 0,
    };
    walk.term(term, 0).is_some()
}

struct Walk<'s> {
    scope: Vec<(&'s str, Cost)>,
    nodes: usize,
}

fn checked(cost: Cost) -> Option<Cost> {
    let count_ok = cost.k.is_none_or(|k| k <= MAX_COUNT);
    (cost.w <= MAX_INLINE_WEIGHT && count_ok).then_some(cost)
}

/// The cartesian product of `parts`' outputs.
fn combine(parts: &[Cost]) -> Option<Cost> {
    let unbounded = parts.iter().filter(|c| c.k.is_none()).count();
    if unbounded > 1 || (unbounded == 1 && parts.iter().any(|c| c.k.is_some() && !c.constant())) {
        return None;
    }
    let bounded: u64 = parts
        .iter()
        .filter_map(|c| c.k)
        .fold(1, u64::saturating_mul);
    let sum = parts.iter().map(|c| c.w).fold(1, u64::saturating_add);
    checked(Cost {
        w: sum.saturating_mul(bounded.max(1)),
        k: (unbounded == 0).then_some(bounded),
        reads: parts.iter().any(|c| c.reads),
        bound: parts.iter().any(|c| c.bound),
    })
}

/// `a | b`.
fn pipe(a: Cost, b: Cost) -> Option<Cost> {
    if a.k.is_none() && b.bound {
        return None;
    }
    let runs = a.k.unwrap_or(2).max(1);
    checked(Cost {
        w: a.w
            .saturating_add(runs.saturating_mul(a.w).saturating_mul(b.w)),
        k: a.k.zip(b.k).map(|(x, y)| x.saturating_mul(y)),
        reads: a.reads || b.reads,
        bound: a.bound || b.bound,
    })
}

fn literal_number(term: &Term<&str>) -> Option<f64> {
    match term {
        Term::Num(text) => text.parse().ok(),
        Term::Neg(inner) => literal_number(inner).map(|n| -n),
        _ => None,
    }
}

fn literal_string(term: &Term<&str>) -> bool {
    matches!(term, Term::Str(None, parts) if parts.iter().all(|p| !matches!(p, StrPart::Term(_))))
}

fn literal_index(term: &Term<&str>) -> bool {
    literal_number(term).is_some() || literal_string(term)
}

/// Whether `path` indexes only by literals; `Some(true)` if it iterates.
fn literal_path(path: &Path<Term<&str>>) -> Option<bool> {
    let mut iterates = false;
    for (part, _) in &path.0 {
        match part {
            Part::Index(index) if literal_index(index) => {}
            Part::Range(None, None) => iterates = true,
            Part::Range(from, to) => {
                let literal = |bound: &Option<Term<&str>>| bound.as_ref().is_none_or(literal_index);
                if !literal(from) || !literal(to) {
                    return None;
                }
            }
            Part::Index(_) => return None,
        }
    }
    Some(iterates)
}

/// Whether `term` is `.`, `.a.b[0]`, `.[]`… on the input.
fn input_path(term: &Term<&str>) -> Option<bool> {
    match term {
        Term::Id => Some(false),
        Term::Path(base, path) => {
            let below = input_path(base)?;
            Some(below | literal_path(path)?)
        }
        _ => None,
    }
}

impl<'s> Walk<'s> {
    fn term(&mut self, term: &Term<&'s str>, depth: usize) -> Option<Cost> {
        self.nodes += 1;
        if depth > MAX_INLINE_DEPTH || self.nodes > MAX_INLINE_NODES {
            return None;
        }
        let d = depth + 1;
        match term {
            Term::Id => Some(INPUT),
            Term::Num(_) => Some(CONSTANT),
            Term::Str(format, parts) => self.string(*format, parts, d),
            Term::Arr(None) => Some(CONSTANT),
            Term::Arr(Some(inner)) => {
                let inner = self.term(inner, d)?;
                checked(Cost {
                    w: inner.w.saturating_add(1),
                    k: Some(1),
                    ..inner
                })
            }
            Term::Obj(entries) => {
                let mut parts = Vec::with_capacity(entries.len() * 2);
                for (key, value) in entries {
                    parts.push(self.term(key, d)?);
                    parts.push(match value {
                        Some(value) => self.term(value, d)?,
                        None => INPUT,
                    });
                }
                combine(&parts)
            }
            Term::Neg(inner) => self.term(inner, d),
            Term::BinOp(left, op, right) => self.binary(left, op, right, d),
            Term::TryCatch(body, catch) => {
                let mut parts = vec![self.term(body, d)?];
                if let Some(catch) = catch {
                    parts.push(self.term(catch, d)?);
                }
                combine(&parts)
            }
            Term::IfThenElse(branches, otherwise) => {
                let mut parts = Vec::with_capacity(branches.len() * 2 + 1);
                for (cond, then) in branches {
                    parts.push(self.term(cond, d)?);
                    parts.push(self.term(then, d)?);
                }
                parts.push(match otherwise {
                    Some(otherwise) => self.term(otherwise, d)?,
                    None => INPUT,
                });
                combine(&parts)
            }
            Term::Call(name, args) => self.call(name, args, d),
            Term::Var(name) => Some(
                self.scope
                    .iter()
                    .rev()
                    .find(|(bound, _)| bound == name)
                    .map_or(CONSTANT, |(_, cost)| *cost),
            ),
            Term::Path(base, path) => {
                // Each part is a term: jaq evaluates a path part by part,
                // one frame deeper per part.
                self.nodes = self.nodes.saturating_add(path.0.len());
                if self.nodes > MAX_INLINE_NODES {
                    return None;
                }
                let base = self.term(base, d)?;
                let iterates = literal_path(path)?;
                Some(Cost {
                    k: if iterates { None } else { base.k },
                    ..base
                })
            }
            Term::Recurse | Term::Label(..) | Term::Break(_) | Term::Fold(..) | Term::Def(..) => {
                None
            }
        }
    }

    fn string(
        &mut self,
        format: Option<&str>,
        parts: &[StrPart<&'s str, Term<&'s str>>],
        d: usize,
    ) -> Option<Cost> {
        let formatted = match format {
            None => false,
            Some("@text" | "@json" | "@html" | "@uri" | "@base64" | "@csv" | "@tsv") => true,
            Some(_) => return None,
        };
        let mut costs = Vec::new();
        for part in parts {
            if let StrPart::Term(inner) = part {
                costs.push(self.term(inner, d)?);
            }
        }
        if costs.is_empty() {
            return Some(if formatted && parts.is_empty() {
                INPUT.times(8)
            } else {
                CONSTANT
            });
        }
        combine(&costs).map(|c| c.times(8))
    }

    fn binary(
        &mut self,
        left: &Term<&'s str>,
        op: &BinaryOp<&'s str>,
        right: &Term<&'s str>,
        d: usize,
    ) -> Option<Cost> {
        match op {
            BinaryOp::Pipe(None) => {
                let a = self.term(left, d)?;
                let b = self.term(right, d)?;
                pipe(a, b)
            }
            BinaryOp::Pipe(Some(Pattern::Var(name))) => {
                let a = self.term(left, d)?;
                let ka = a.k?;
                self.scope.push((
                    name,
                    Cost {
                        k: Some(1),
                        bound: true,
                        ..a
                    },
                ));
                let b = self.term(right, d);
                self.scope.pop();
                let b = b?;
                checked(Cost {
                    w: a.w.saturating_add(ka.max(1).saturating_mul(b.w)),
                    k: b.k.map(|kb| ka.saturating_mul(kb)),
                    reads: a.reads || b.reads,
                    bound: a.bound || b.bound,
                })
            }
            BinaryOp::Pipe(Some(_)) => None,
            BinaryOp::Comma => {
                let a = self.term(left, d)?;
                let b = self.term(right, d)?;
                checked(Cost {
                    w: a.w.saturating_add(b.w),
                    k: a.k.zip(b.k).map(|(x, y)| x.saturating_add(y)),
                    reads: a.reads || b.reads,
                    bound: a.bound || b.bound,
                })
            }
            BinaryOp::Alt | BinaryOp::Or | BinaryOp::And | BinaryOp::Cmp(_) => {
                combine(&[self.term(left, d)?, self.term(right, d)?])
            }
            BinaryOp::Math(math) => self.math(left, math, right, d),
            BinaryOp::Assign | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt => {
                let iterates = input_path(left)?;
                let value = self.term(right, d)?;
                if iterates && !value.constant() {
                    return None;
                }
                let k = value.k?;
                checked(Cost {
                    w: value
                        .w
                        .saturating_add(2)
                        .saturating_mul(k.max(1).saturating_mul(2)),
                    k: Some(k),
                    reads: true,
                    bound: value.bound,
                })
            }
            BinaryOp::Update => {
                input_path(left)?;
                let update = self.term(right, d)?;
                if update.bound {
                    return None;
                }
                checked(Cost {
                    w: update.w.saturating_add(1).saturating_mul(2),
                    k: Some(1),
                    reads: true,
                    bound: false,
                })
            }
        }
    }

    fn math(
        &mut self,
        left: &Term<&'s str>,
        math: &Math,
        right: &Term<&'s str>,
        d: usize,
    ) -> Option<Cost> {
        let literal = literal_number(left).or_else(|| literal_number(right));
        let factor = match math {
            Math::Add => 1,
            Math::Sub | Math::Div | Math::Rem => {
                literal?;
                1
            }
            Math::Mul => {
                let n = literal?.abs();
                if n.is_nan() || n > MAX_FACTOR {
                    return None;
                }
                n.ceil().max(1.0) as u64
            }
        };
        combine(&[self.term(left, d)?, self.term(right, d)?]).and_then(|c| checked(c.times(factor)))
    }

    fn call(&mut self, name: &str, args: &[Term<&'s str>], d: usize) -> Option<Cost> {
        let mut costs = Vec::with_capacity(args.len());
        for arg in args {
            costs.push(self.term(arg, d)?);
        }
        builtin(name, args, &costs)
    }
}

/// The cost of a call of an allowed builtin with arguments of `costs`.
fn builtin(name: &str, args: &[Term<&str>], costs: &[Cost]) -> Option<Cost> {
    let on_input = |w: u64| Some(INPUT.times(w));
    // A function of the input and of its arguments, evaluated on the input.
    let with_args = |w: u64| {
        let mut parts = vec![INPUT];
        parts.extend_from_slice(costs);
        combine(&parts).and_then(|c| checked(c.times(w)))
    };
    // A function that runs its argument on every element of the input.
    let per_element = |w: u64| {
        let f = costs.first()?;
        if f.bound {
            return None;
        }
        checked(INPUT.times(f.w.saturating_add(1).saturating_mul(w)))
    };
    match (name, args.len()) {
        ("true" | "false" | "null", 0) => Some(CONSTANT),
        ("empty", 0) => Some(Cost {
            k: Some(0),
            ..CONSTANT
        }),
        ("error", 0) => Some(Cost {
            k: Some(0),
            ..INPUT
        }),
        (
            "length" | "utf8bytelength" | "not" | "type" | "tonumber" | "ascii_downcase"
            | "ascii_upcase" | "floor" | "ceil" | "round" | "fabs" | "sqrt" | "abs" | "isboolean"
            | "isnumber" | "isstring" | "isarray" | "isobject" | "isnan" | "isinfinite"
            | "isfinite" | "isnormal" | "keys_unsorted" | "reverse" | "min" | "max" | "first"
            | "last" | "any" | "all" | "trim" | "ltrim" | "rtrim" | "values" | "nulls" | "booleans"
            | "numbers" | "strings" | "arrays" | "objects" | "iterables" | "scalars",
            0,
        ) => on_input(2),
        ("tostring" | "tojson" | "to_entries", 0) => on_input(16),
        ("keys" | "sort", 0) => on_input(32),
        ("select", 1) => {
            let f = costs.first()?;
            checked(Cost {
                w: f.w.saturating_add(1),
                reads: true,
                ..*f
            })
        }
        ("error", 1) => costs.first().map(|f| Cost { k: Some(0), ..*f }),
        ("first", 1) => costs.first().map(|f| Cost { k: Some(1), ..*f }),
        ("has" | "startswith" | "endswith" | "ltrimstr" | "rtrimstr", 1) => with_args(2),
        ("split", 1) => with_args(64),
        ("map" | "map_values" | "any" | "all", 1) => per_element(2),
        ("sort_by" | "min_by" | "max_by", 1) => per_element(32),
        ("test", 1 | 2) if args.iter().all(literal_string) => on_input(8),
        _ => None,
    }
}

/// The first text slice inside `term`, for placing an error.
pub fn text_in<'s>(term: &Term<&'s str>) -> Option<&'s str> {
    match term {
        Term::Num(text) | Term::Call(text, _) | Term::Var(text) | Term::Break(text) => Some(text),
        Term::Label(text, _) | Term::Fold(text, ..) => Some(text),
        _ => children(term).into_iter().find_map(text_in),
    }
}

/// The terms directly inside `term`.
fn children<'a, 's>(term: &'a Term<&'s str>) -> Vec<&'a Term<&'s str>> {
    let mut out = Vec::new();
    match term {
        Term::Id
        | Term::Recurse
        | Term::Num(_)
        | Term::Break(_)
        | Term::Var(_)
        | Term::Arr(None) => {}
        Term::Str(_, parts) => out.extend(parts.iter().filter_map(|p| match p {
            StrPart::Term(t) => Some(t),
            _ => None,
        })),
        Term::Arr(Some(t)) | Term::Neg(t) | Term::Label(_, t) => out.push(&**t),
        Term::Obj(entries) => {
            for (key, value) in entries {
                out.push(key);
                out.extend(value.iter());
            }
        }
        Term::BinOp(l, _, r) => out.extend([&**l, &**r]),
        Term::Fold(_, source, _, args) => {
            out.push(&**source);
            out.extend(args.iter());
        }
        Term::TryCatch(body, catch) => {
            out.push(&**body);
            out.extend(catch.as_deref());
        }
        Term::IfThenElse(branches, otherwise) => {
            for (cond, then) in branches {
                out.extend([cond, then]);
            }
            out.extend(otherwise.as_deref());
        }
        Term::Def(defs, body) => {
            out.extend(defs.iter().map(|def| &def.body));
            out.push(&**body);
        }
        Term::Call(_, args) => out.extend(args.iter()),
        Term::Path(base, path) => {
            out.push(&**base);
            for (part, _) in &path.0 {
                match part {
                    Part::Index(i) => out.push(i),
                    Part::Range(from, to) => out.extend(from.iter().chain(to.iter())),
                }
            }
        }
    }
    out
}

/// If `term` nests deeper than `limit`, a term at depth `limit + 1`.
/// Descends at most `limit + 1` levels.
pub fn too_deep<'a, 's>(term: &'a Term<&'s str>, limit: usize) -> Option<&'a Term<&'s str>> {
    if limit == 0 {
        return Some(term);
    }
    children(term)
        .into_iter()
        .find_map(|child| too_deep(child, limit - 1))
}

#[cfg(test)]
mod tests;
