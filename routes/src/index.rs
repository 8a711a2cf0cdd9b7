//! A segment trie over the routes' path predicates, so that lookup cost follows the
//! request path's length rather than the number of routes.
//!
//! Every route with `path` (exact or template) or `path_prefix` is registered at one
//! trie node; routes without a path predicate, or with `path_regex`, are "always"
//! candidates. A lookup walks the request's segments once, collecting candidates whose
//! path predicate already holds, then evaluates the remaining predicates in ascending
//! route index, so the first match in file order wins exactly as in a linear scan.

use std::collections::HashMap;

use crate::matching::{PathMatch, Segment};

/// The compiled index.
#[derive(Debug, Default)]
pub(crate) struct RouteIndex {
    nodes: Vec<Node>,
    /// Routes that are candidates for every path (no path predicate, or `path_regex`,
    /// which the caller checks lazily, only when its turn comes), ascending.
    always: Vec<u32>,
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, u32>,
    param: Option<u32>,
    /// Exact paths and templates that end at this node.
    ends: Vec<u32>,
    /// Prefixes that end at this node.
    prefixes: Vec<u32>,
}

enum Edge<'a> {
    Literal(&'a str),
    Param,
}

/// Candidates kept on the stack for the common case; spills to the heap beyond that.
struct Candidates {
    inline: [u32; 32],
    len: usize,
    spill: Vec<u32>,
}

impl RouteIndex {
    /// Builds the index; `paths[i]` is route `i`'s path predicate.
    pub(crate) fn build<'a>(paths: impl IntoIterator<Item = Option<&'a PathMatch>>) -> Self {
        let mut index = RouteIndex {
            nodes: vec![Node::default()],
            ..RouteIndex::default()
        };
        for (route, path) in paths.into_iter().enumerate() {
            let route = u32::try_from(route).unwrap_or(u32::MAX);
            match path {
                None | Some(PathMatch::Regex(_)) => index.always.push(route),
                Some(PathMatch::Exact(exact)) => {
                    let edges = split(exact).map(Edge::Literal);
                    let node = index.insert(edges);
                    index.nodes[node].ends.push(route);
                }
                Some(PathMatch::Template { segments, .. }) => {
                    let edges = segments.iter().map(|segment| match segment {
                        Segment::Literal(literal) => Edge::Literal(literal),
                        Segment::Param(_) => Edge::Param,
                    });
                    let node = index.insert(edges);
                    index.nodes[node].ends.push(route);
                }
                Some(PathMatch::Prefix { prefix, .. }) => {
                    let node = if prefix.is_empty() {
                        0
                    } else {
                        index.insert(split(prefix).map(Edge::Literal))
                    };
                    index.nodes[node].prefixes.push(route);
                }
            }
        }
        index
    }

    fn insert<'a>(&mut self, edges: impl Iterator<Item = Edge<'a>>) -> usize {
        let mut node = 0;
        for edge in edges {
            let next = self.nodes.len() as u32;
            let child = match edge {
                Edge::Literal(segment) => *self.nodes[node]
                    .literal
                    .entry(segment.into())
                    .or_insert(next),
                Edge::Param => *self.nodes[node].param.get_or_insert(next),
            };
            if child == next {
                self.nodes.push(Node::default());
            }
            node = child as usize;
        }
        node
    }

    /// The smallest route index for which `holds(route, path_checked)` returns true,
    /// among the trie's candidates for `path` (whose path predicate is known to hold:
    /// `path_checked == true`) and the always-candidates (`path_checked == false`: the
    /// caller must check every predicate).
    pub(crate) fn first_match(
        &self,
        path: &str,
        mut holds: impl FnMut(usize, bool) -> bool,
    ) -> Option<usize> {
        let mut found = Candidates::new();
        let segments = path.get(1..).unwrap_or("");
        self.walk(0, segments, true, &mut found);
        let found = found.as_sorted();
        // Merge the two ascending lists and stop at the first route that holds.
        let (mut a, mut b) = (0, 0);
        loop {
            let (next, path_checked) = match (found.get(a), self.always.get(b)) {
                (Some(x), Some(y)) if x < y => {
                    a += 1;
                    (*x, true)
                }
                (_, Some(y)) => {
                    b += 1;
                    (*y, false)
                }
                (Some(x), None) => {
                    a += 1;
                    (*x, true)
                }
                (None, None) => return None,
            };
            if holds(next as usize, path_checked) {
                return Some(next as usize);
            }
        }
    }

    /// Visits `node` with `rest` (the unconsumed part of the path, without its leading
    /// slash) left to match; `more` is false once every segment is consumed.
    fn walk(&self, node: usize, rest: &str, more: bool, found: &mut Candidates) {
        let Some(current) = self.nodes.get(node) else {
            return;
        };
        for route in &current.prefixes {
            found.push(*route);
        }
        if !more {
            for route in &current.ends {
                found.push(*route);
            }
            return;
        }
        let (segment, tail, more_after) = match rest.split_once('/') {
            Some((segment, tail)) => (segment, tail, true),
            None => (rest, "", false),
        };
        if let Some(child) = current.literal.get(segment) {
            self.walk(*child as usize, tail, more_after, found);
        }
        if let Some(child) = current.param
            && !segment.is_empty()
        {
            self.walk(child as usize, tail, more_after, found);
        }
    }
}

impl RouteIndex {
    /// Every route whose path predicate might cover `later`'s (match every path it
    /// matches): a superset, for the unreachable-route lint to check exactly. Includes
    /// all always-candidates.
    pub(crate) fn covering_candidates(&self, later: Option<&PathMatch>, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.always);
        let Some(later) = later else { return };
        match later {
            PathMatch::Exact(path) => {
                let mut found = Candidates::new();
                self.walk(0, path.get(1..).unwrap_or(""), true, &mut found);
                out.extend_from_slice(found.as_sorted());
            }
            PathMatch::Prefix { prefix, .. } => {
                let mut node = 0;
                out.extend_from_slice(&self.nodes[0].prefixes);
                if prefix.is_empty() {
                    return;
                }
                for segment in split(prefix) {
                    match self.nodes[node].literal.get(segment) {
                        Some(child) => node = *child as usize,
                        None => return,
                    }
                    out.extend_from_slice(&self.nodes[node].prefixes);
                }
            }
            PathMatch::Template { segments, .. } => self.walk_shape(0, segments, out),
            PathMatch::Regex(_) => out.extend_from_slice(&self.nodes[0].prefixes),
        }
    }

    /// Like `walk`, for a template: its parameters can only be covered by parameters.
    fn walk_shape(&self, node: usize, rest: &[Segment], out: &mut Vec<u32>) {
        let Some(current) = self.nodes.get(node) else {
            return;
        };
        out.extend_from_slice(&current.prefixes);
        let Some((first, tail)) = rest.split_first() else {
            out.extend_from_slice(&current.ends);
            return;
        };
        if let Segment::Literal(literal) = first {
            if let Some(child) = current.literal.get(literal.as_str()) {
                self.walk_shape(*child as usize, tail, out);
            }
            if literal.is_empty() {
                return;
            }
        }
        if let Some(child) = current.param {
            self.walk_shape(child as usize, tail, out);
        }
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.get(1..).unwrap_or("").split('/')
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            inline: [0; 32],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, route: u32) {
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = route;
            self.len += 1;
        } else {
            self.spill.push(route);
        }
    }

    fn as_sorted(&mut self) -> &[u32] {
        let all: &mut [u32] = if self.spill.is_empty() {
            &mut self.inline[..self.len]
        } else {
            self.spill.extend_from_slice(&self.inline[..self.len]);
            &mut self.spill
        };
        all.sort_unstable();
        all
    }
}
