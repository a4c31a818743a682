//! `${VAR}` and `${VAR:-default}` in the config file, from the environment.
//!
//! A container is configured from its environment, and a secret should
//! never be written into a file. The references are replaced in the file's
//! text before it is read as TOML, so they work anywhere: in strings, keys
//! and numbers. What a value may hold depends on where it lands, so that no
//! value can change the file's structure: in a `"..."` string it is escaped,
//! in a `'...'` string it may not hold a `'` (nor a line break, in a one-line
//! one), and outside strings it must read alone as a number, boolean or
//! date. Comments are left as they are. `$${` is a literal `${`; a default
//! ends at the first `}`.

/// The text with every reference replaced by `lookup(NAME)` (unset or
/// empty: the default after `:-`, else an error naming the line; a value
/// `lookup` cannot give, such as one that is not UTF-8, is an error too).
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Result<Option<String>, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut place = Place::Bare;
    let mut rest = text;
    let line = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("line {}: a ${{ without its closing }}", line(rest)))?;
            let (name, default) = match after[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&after[..end], None),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("line {}: '{name}' is not an environment variable's name (letters, digits and _)", line(rest)));
            }
            let found = lookup(name).map_err(|why| format!("line {}: ${{{name}}} {why}", line(rest)))?;
            let value = match (found.filter(|v| !v.is_empty()), default) {
                (Some(value), _) => value,
                (None, Some(default)) => default.to_string(),
                (None, None) => return Err(format!("line {}: ${{{name}}} is not set, or empty (or give a default: ${{{name}:-...}})", line(rest))),
            };
            place.insert(&value, &mut out).map_err(|why| format!("line {}: ${{{name}}} {why}", line(rest)))?;
            rest = &after[end + 1..];
            continue;
        }
        let (taken, next) = place.step(rest);
        out.push_str(&rest[..taken]);
        rest = &rest[taken..];
        place = next;
    }
    Ok(out)
}

/// Where in the TOML text a position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Bare,
    /// In a `"..."` string.
    Basic,
    /// In a `"""..."""` string.
    MultiBasic,
    /// In a `'...'` string.
    Literal,
    /// In a `'''...'''` string.
    MultiLiteral,
}

impl Place {
    /// The bytes of `rest` taken as they are (at least one character), and where they lead.
    fn step(self, rest: &str) -> (usize, Place) {
        let one = rest.chars().next().map_or(1, char::len_utf8);
        let starts = |s: &str| rest.starts_with(s);
        match self {
            Place::Bare if starts("\"\"\"") => (3, Place::MultiBasic),
            Place::Bare if starts("'''") => (3, Place::MultiLiteral),
            Place::Bare if starts("\"") => (1, Place::Basic),
            Place::Bare if starts("'") => (1, Place::Literal),
            // A comment is taken whole: nothing in it is replaced.
            Place::Bare if starts("#") => (rest.find('\n').unwrap_or(rest.len()), Place::Bare),
            // An escape takes the character after it along (`\"` does not end the string).
            Place::Basic | Place::MultiBasic if starts("\\") => (1 + rest[1..].chars().next().map_or(0, char::len_utf8), self),
            Place::Basic if starts("\"") || starts("\n") => (1, Place::Bare),
            // Up to two quotes before the closing three are the string's own.
            Place::MultiBasic if starts("\"\"\"") => (quotes(rest, '"'), Place::Bare),
            Place::Literal if starts("'") || starts("\n") => (1, Place::Bare),
            Place::MultiLiteral if starts("'''") => (quotes(rest, '\''), Place::Bare),
            _ => (one, self),
        }
    }

    /// Write `value` as it must appear here.
    fn insert(self, value: &str, out: &mut String) -> Result<(), &'static str> {
        match self {
            Place::Basic | Place::MultiBasic => {
                for c in value.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                        c => out.push(c),
                    }
                }
            }
            // Beside the string's own quotes, one ' of the value could close it.
            Place::Literal if value.contains(['\'', '\n', '\r']) => return Err("holds a ' or a line break, which a '...' string cannot: use \"...\""),
            Place::MultiLiteral if value.contains('\'') => return Err("holds a ', which a '''...''' string cannot: use \"...\""),
            Place::Literal | Place::MultiLiteral => out.push_str(value),
            Place::Bare if is_scalar(value) => out.push_str(value),
            Place::Bare => return Err("outside quotes must read alone as a number, boolean or date: put it in \"...\""),
        }
        Ok(())
    }
}

/// The closing quotes of a multi-line string at the start of `rest`: three,
/// and up to two more that belong to the string.
fn quotes(rest: &str, quote: char) -> usize {
    rest.chars().take_while(|&c| c == quote).count().min(5)
}

/// Whether `value` is, by itself, one TOML number, boolean or date (so it
/// cannot be a key, a dotted path, or more than one thing).
fn is_scalar(value: &str) -> bool {
    let single_line = !value.contains(['\n', '\r', '#', '=', ',', '[', ']', '{', '}']);
    single_line
        && toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok_and(|t| {
            t.len() == 1 && matches!(t.get("v"), Some(toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) | toml::Value::Datetime(_)))
        })
}
