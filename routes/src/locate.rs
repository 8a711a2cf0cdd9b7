//! A small line locator over the raw YAML text: dotted key → 1-based line.
//!
//! serde_yaml reports locations only for syntax errors, so semantic errors find their
//! line here. The scanner understands the subset of YAML that route files use: block
//! mappings and sequences (including compact `- key: value` items and sequences at the
//! parent's indentation), flow mappings and sequences on one or several lines, quoted
//! keys, comments and block scalars (`|`, `>`), whose content it skips. Anything it does
//! not understand simply yields no entry; callers fall back to the nearest located
//! ancestor, so an imprecise answer is never a wrong line for a different item.

use std::collections::HashMap;

/// Dotted key (`routes[2].match.path_regex`, `upstreams.invoices.timeout`) → line.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<String, usize>,
    /// Keys written twice in their mapping → the line of the second time.
    repeats: HashMap<String, usize>,
}

/// A [`LineIndex`] built only when first needed (a valid file needs only the lines of
/// its route items, found by a much cheaper scan).
pub(crate) struct LazyLines<'a> {
    text: &'a str,
    index: std::cell::OnceCell<LineIndex>,
    route_items: Option<Vec<usize>>,
}

impl<'a> LazyLines<'a> {
    /// Prepares lookups over `text`, whose `routes` list has `route_count` items.
    pub(crate) fn new(text: &'a str, route_count: usize) -> Self {
        let route_items = item_lines(text, "routes").filter(|items| items.len() == route_count);
        LazyLines {
            text,
            index: std::cell::OnceCell::new(),
            route_items,
        }
    }

    fn index(&self) -> &LineIndex {
        self.index.get_or_init(|| LineIndex::new(self.text))
    }

    /// See [`LineIndex::line_of`].
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        self.index().line_of(key)
    }

    /// See [`LineIndex::repeat_of`].
    pub(crate) fn repeat_of(&self, key: &str) -> Option<usize> {
        self.index().repeat_of(key)
    }

    /// See [`LineIndex::find_field`].
    pub(crate) fn find_field(&self, under: &str, field: &str) -> Option<(String, usize)> {
        self.index().find_field(under, field)
    }

    /// The line of `routes[index]` (0 if unknown).
    pub(crate) fn route_line(&self, index: usize) -> usize {
        match &self.route_items {
            Some(items) => items.get(index).copied().unwrap_or(0),
            None => self.line_of(&format!("routes[{index}]")).unwrap_or(0),
        }
    }
}

/// Lines of the items of the top-level block sequence `key:`, without building paths;
/// `None` when the layout is not the plain block form (the caller then uses the full
/// scanner).
fn item_lines(text: &str, key: &str) -> Option<Vec<usize>> {
    let mut lines = text.lines().enumerate();
    lines.by_ref().find(|(_, line)| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| strip_comment(rest).trim().is_empty())
    })?;
    let mut items = Vec::new();
    let mut item_indent = None;
    for (number, raw) in lines {
        let content = raw.trim_start_matches(' ');
        if strip_comment(content).trim().is_empty() {
            continue;
        }
        let indent = raw.len() - content.len();
        let is_item = content == "-" || content.starts_with("- ");
        if indent == 0 && !is_item {
            break;
        }
        if is_item && *item_indent.get_or_insert(indent) == indent {
            items.push(number + 1);
        }
    }
    Some(items)
}

struct BlockFrame {
    indent: usize,
    path: String,
    is_item: bool,
    open: bool,
    next_index: usize,
}

struct FlowFrame {
    path: String,
    is_map: bool,
    index: usize,
    key: Option<String>,
}

#[derive(Default)]
struct Scanner {
    index: LineIndex,
    block: Vec<BlockFrame>,
    flow: Vec<FlowFrame>,
    flow_base: String,
    /// Inside a block scalar: lines indented more than this belong to it.
    block_scalar_indent: Option<usize>,
}

impl LineIndex {
    /// Scans `text` once.
    pub(crate) fn new(text: &str) -> Self {
        let mut scanner = Scanner::default();
        for (number, line) in text.lines().enumerate() {
            scanner.line(line, number + 1);
        }
        scanner.index
    }

    /// The line of `key`, or of its nearest located ancestor.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.lines.get(key) {
                return Some(*line);
            }
            key = &key[..parent_end(key)?];
        }
    }

    /// The first located key named `field` at or below `under` (e.g. an unknown field
    /// that serde named without saying where): its full dotted key and line.
    pub(crate) fn find_field(&self, under: &str, field: &str) -> Option<(String, usize)> {
        self.lines
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(under)
                    .and_then(|rest| rest.strip_suffix(field))
                    .is_some_and(|middle| middle.ends_with('.'))
            })
            .min_by_key(|(_, line)| **line)
            .map(|(key, line)| (key.clone(), *line))
    }

    /// The line where `key` is written a second time in its mapping (a duplicate key,
    /// which the YAML parser places at the mapping's start), exactly: no ancestor.
    pub(crate) fn repeat_of(&self, key: &str) -> Option<usize> {
        self.repeats.get(key).copied()
    }

    fn record(&mut self, path: &str, line: usize) {
        self.lines.entry(path.to_owned()).or_insert(line);
    }

    /// Records a mapping key, remembering where it is first written again.
    fn record_key(&mut self, path: &str, line: usize) {
        if self.lines.contains_key(path) {
            self.repeats.entry(path.to_owned()).or_insert(line);
        } else {
            self.lines.insert(path.to_owned(), line);
        }
    }
}

/// Where the last `.key` or `[n]` of a dotted key starts.
fn parent_end(key: &str) -> Option<usize> {
    if key.ends_with(']') {
        return key.rfind('[');
    }
    key.rfind('.')
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Scanner {
    fn line(&mut self, raw: &str, number: usize) {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let content = strip_comment(&raw[indent..]).trim_end();
        if let Some(limit) = self.block_scalar_indent {
            if content.is_empty() || indent > limit {
                return;
            }
            self.block_scalar_indent = None;
        }
        if !self.flow.is_empty() {
            self.flow_text(content, number);
            return;
        }
        if content.is_empty()
            || content.starts_with('%')
            || content.starts_with("---")
            || content.starts_with("...")
        {
            return;
        }
        self.node(indent, content, number);
    }

    fn node(&mut self, indent: usize, content: &str, number: usize) {
        if content == "-" || content.starts_with("- ") {
            self.item(indent, content, number);
        } else if let Some((key, value)) = split_key(content) {
            while self.block.last().is_some_and(|top| top.indent >= indent) {
                self.block.pop();
            }
            let parent = self.block.last().map_or("", |top| top.path.as_str());
            let path = join_key(parent, key);
            self.index.record_key(&path, number);
            let value = skip_properties(value);
            self.block.push(BlockFrame {
                indent,
                path: path.clone(),
                is_item: false,
                open: value.is_empty(),
                next_index: 0,
            });
            self.value(indent, value, path, number);
        } else if (content.starts_with('{') || content.starts_with('[')) && self.block.is_empty() {
            self.value(indent, content, String::new(), number);
        }
    }

    fn item(&mut self, indent: usize, content: &str, number: usize) {
        while self.block.last().is_some_and(|top| {
            top.indent > indent || (top.indent == indent && (top.is_item || !top.open))
        }) {
            self.block.pop();
        }
        let path = match self.block.last_mut() {
            Some(parent) => {
                let path = format!("{}[{}]", parent.path, parent.next_index);
                parent.next_index += 1;
                path
            }
            None => return,
        };
        self.index.record(&path, number);
        self.block.push(BlockFrame {
            indent,
            path: path.clone(),
            is_item: true,
            open: true,
            next_index: 0,
        });
        let rest = content[1..].trim_start();
        if rest.is_empty() {
            return;
        }
        let rest_indent = indent + (content.len() - rest.len());
        if rest == "-" || rest.starts_with("- ") || split_key(rest).is_some() {
            self.node(rest_indent, rest, number);
        } else {
            self.value(indent, skip_properties(rest), path, number);
        }
    }

    /// A value after `key:` or `- `: a flow collection, a block scalar header, or a scalar.
    fn value(&mut self, indent: usize, value: &str, path: String, number: usize) {
        if value.starts_with('{') || value.starts_with('[') {
            self.flow_base = path;
            self.flow_text(value, number);
        } else if value.starts_with('|') || value.starts_with('>') {
            self.block_scalar_indent = Some(indent);
        }
    }

    fn flow_text(&mut self, text: &str, number: usize) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b' ' | b'\t' => i += 1,
                b'{' | b'[' => {
                    let path = self.flow_child_path();
                    self.flow.push(FlowFrame {
                        path,
                        is_map: bytes[i] == b'{',
                        index: 0,
                        key: None,
                    });
                    i += 1;
                }
                b'}' | b']' => {
                    self.flow.pop();
                    if self.flow.is_empty() {
                        return;
                    }
                    i += 1;
                }
                b',' => {
                    if let Some(top) = self.flow.last_mut() {
                        top.key = None;
                        top.index += 1;
                    }
                    i += 1;
                }
                quote @ (b'"' | b'\'') => {
                    let end = quoted_end(bytes, i, quote);
                    let token = &text[i + 1..end.saturating_sub(1).max(i + 1)];
                    i = self.flow_scalar(token, bytes, end, number);
                }
                _ => {
                    let mut end = i;
                    while end < bytes.len() && !is_plain_end(bytes, end) {
                        end += 1;
                    }
                    let token = text[i..end].trim_end();
                    i = self.flow_scalar(token, bytes, end.max(i + 1), number);
                }
            }
        }
    }

    /// Records `token` as a key if a `:` follows it inside a flow mapping; returns where
    /// scanning resumes.
    fn flow_scalar(&mut self, token: &str, bytes: &[u8], mut end: usize, number: usize) -> usize {
        let mut j = end;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if bytes.get(j) == Some(&b':') {
            if let Some(top) = self.flow.last_mut()
                && top.is_map
                && top.key.is_none()
            {
                let path = join_key(&top.path, token);
                top.key = Some(token.to_owned());
                self.index.record_key(&path, number);
            }
            end = j + 1;
        }
        end
    }

    fn flow_child_path(&self) -> String {
        match self.flow.last() {
            None => self.flow_base.clone(),
            Some(top) if top.is_map => match &top.key {
                Some(key) => join_key(&top.path, key),
                None => top.path.clone(),
            },
            Some(top) => format!("{}[{}]", top.path, top.index),
        }
    }
}

/// `key: value` → (`key`, `value`), with quotes removed from the key.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let bytes = content.as_bytes();
    let (key, after) = match bytes.first()? {
        quote @ (b'"' | b'\'') => {
            let end = quoted_end(bytes, 0, *quote);
            let key = content.get(1..end.checked_sub(1)?)?;
            let rest = content[end..].trim_start();
            (key, rest.strip_prefix(':')?)
        }
        b'{' | b'[' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'?' => return None,
        _ => {
            let colon = (0..bytes.len())
                .find(|&i| bytes[i] == b':' && bytes.get(i + 1).is_none_or(|b| *b == b' '))?;
            (content[..colon].trim_end(), &content[colon + 1..])
        }
    };
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some((key, after.trim()))
}

/// Index just past the closing quote of the quoted scalar starting at `start`.
fn quoted_end(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if quote == b'"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Whether a plain scalar in flow context ends at `i`.
fn is_plain_end(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b',' | b'{' | b'}' | b'[' | b']' => true,
        b':' => bytes
            .get(i + 1)
            .is_none_or(|b| matches!(b, b' ' | b',' | b'}' | b']')),
        _ => false,
    }
}

/// Drops anchors (`&a`) and tags (`!!str`) in front of a value.
fn skip_properties(mut value: &str) -> &str {
    while value.starts_with('&') || value.starts_with('!') {
        value = value.find(' ').map_or("", |end| value[end..].trim_start());
    }
    value
}

/// Removes a `# comment` that is outside quotes and preceded by whitespace (or at start).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' if i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t' => return &line[..i],
            quote @ (b'"' | b'\'') if i == 0 || !bytes[i - 1].is_ascii_alphanumeric() => {
                i = quoted_end(bytes, i, quote);
            }
            _ => i += 1,
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# leading comment
upstreams:
  monolith: { url: "http://127.0.0.1:8000" }
  invoices:
    url: http://invoices:9000   # trailing
    timeout: 10s
    tls: { ca: ca.pem,
           server_name: x }

default: monolith
routes:
- name: invoices
  match: { path_prefix: /invoices, headers: { x-beta: "true" } }
  to: invoices
- name: "payroll"
  match:
    path: "/payroll/{id}"
    methods: [GET, POST]
  respond:
    body: |
      key: not a key
      - nor an item
    status: 200
  -bogus: 1
-   name: third
    'to': monolith
"#;

    #[test]
    fn locates_block_flow_and_items() {
        let index = LineIndex::new(TEXT);
        let expect = [
            ("upstreams", 2),
            ("upstreams.monolith", 3),
            ("upstreams.monolith.url", 3),
            ("upstreams.invoices", 4),
            ("upstreams.invoices.url", 5),
            ("upstreams.invoices.timeout", 6),
            ("upstreams.invoices.tls.ca", 7),
            ("upstreams.invoices.tls.server_name", 8),
            ("default", 10),
            ("routes", 11),
            ("routes[0]", 12),
            ("routes[0].name", 12),
            ("routes[0].match.path_prefix", 13),
            ("routes[0].match.headers.x-beta", 13),
            ("routes[0].to", 14),
            ("routes[1]", 15),
            ("routes[1].match.path", 17),
            ("routes[1].match.methods", 18),
            ("routes[1].respond.body", 20),
            ("routes[1].respond.status", 23),
            ("routes[2]", 25),
            ("routes[2].to", 26),
        ];
        for (key, line) in expect {
            assert_eq!(index.line_of(key), Some(line), "{key}");
        }
        assert_eq!(index.line_of("routes[1].respond.body.key"), Some(20));
        assert_eq!(index.line_of("routes[0].match.nothing"), Some(13));
        assert_eq!(
            index.find_field("routes[1]", "methods"),
            Some(("routes[1].match.methods".to_owned(), 18))
        );
        assert_eq!(index.find_field("routes[1]", "thods"), None);
    }

    #[test]
    fn fast_item_lines_agree_with_the_scanner() {
        let index = LineIndex::new(TEXT);
        let items = item_lines(TEXT, "routes").unwrap();
        assert_eq!(items.len(), 3);
        for (i, line) in items.iter().enumerate() {
            assert_eq!(index.line_of(&format!("routes[{i}]")), Some(*line));
        }
        let lazy = LazyLines::new(TEXT, 3);
        assert_eq!(lazy.route_line(2), 25);
        assert!(lazy.index.get().is_none(), "route lines need no full scan");
        assert_eq!(item_lines("routes: []\n", "routes"), None);
    }

    #[test]
    fn repeated_keys_keep_their_first_line_and_note_the_second() {
        let text = "a:\n  b: 1\n  c: { d: 1, d: 2 }\n  b: 2\n  b: 3\nl:\n- b: 1\n- b: 2\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line_of("a.b"), Some(2));
        assert_eq!(index.repeat_of("a.b"), Some(4));
        assert_eq!(index.repeat_of("a.c.d"), Some(3));
        assert_eq!(index.repeat_of("l[1].b"), None);
        assert_eq!(index.repeat_of("a.b.x"), None);
    }

    #[test]
    fn compact_and_indented_sequences() {
        let text = "routes:\n  - name: a\n    match:\n      path: /a\n  - name: b\nx:\n  - [1, 2]\n  - {k: v}\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line_of("routes[0].match.path"), Some(4));
        assert_eq!(index.line_of("routes[1].name"), Some(5));
        assert_eq!(index.line_of("x[1].k"), Some(8));
    }
}
