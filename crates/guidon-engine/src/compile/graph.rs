//! The graph checks: references from flags to their prerequisites and from
//! conditions to segments, and the bounds on the graph they form (no cycle,
//! chains at most [`MAX_CHAIN_DEPTH`] deep, at most [`MAX_EVALUATION_COST`]
//! work per evaluation).

use foldhash::{HashSet, HashSetExt};

use super::ir::CompiledPrerequisite;
use super::{Compiler, MAX_CHAIN_DEPTH, MAX_EVALUATION_COST};
use crate::model::Flag;

/// Who a condition belongs to: references to segments are edges of the
/// graph that bounds evaluation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner {
    Flag(usize),
    Segment(usize),
}

impl Compiler<'_> {
    /// Resolves the prerequisites of flag `i` (at `at`) to flag indices,
    /// recording each reference as an edge of the prerequisite graph.
    pub(super) fn prerequisites(
        &mut self,
        at: &str,
        i: usize,
        flag: &Flag,
    ) -> Vec<CompiledPrerequisite> {
        let mut prerequisites = Vec::with_capacity(flag.prerequisites.len());
        for (j, p) in flag.prerequisites.iter().enumerate() {
            let path = format!("{at}.prerequisites[{j}]");
            let Some(&target) = self.flag_index.get(p.flag.as_str()) else {
                self.problem(format!("{path}.flag"), format!("unknown flag {:?}", p.flag));
                continue;
            };
            if target == i {
                self.problem(
                    format!("{path}.flag"),
                    format!("flag {:?} cannot be its own prerequisite", p.flag),
                );
                continue;
            }
            self.flag_edges[i].push((target, format!("{path}.flag")));
            if p.variants.as_ref().is_some_and(Vec::is_empty) {
                self.problem(
                    format!("{path}.variants"),
                    "an empty list of variants can never be met; leave variants out to require none",
                );
            }
            if let Some(keys) = &p.variants {
                let other = &self.file.flags[target];
                for (k, key) in keys.iter().enumerate() {
                    if !other.variants.iter().any(|v| &v.key == key) {
                        self.problem(
                            format!("{path}.variants[{k}]"),
                            format!("flag {:?} has no variant {key:?}", p.flag),
                        );
                    }
                }
            }
            prerequisites.push(CompiledPrerequisite {
                flag: target,
                enabled: p.enabled,
                variants: p
                    .variants
                    .as_ref()
                    .map(|v| v.iter().map(|k| k.as_str().into()).collect()),
            });
        }
        prerequisites
    }

    /// Resolves segment `key`, named at `path` by a condition of `owner`, and
    /// adds it to `found` unless already there; a reference from a segment is
    /// an edge of the segment graph, one from a flag counts towards its cost.
    pub(super) fn segment_reference(
        &mut self,
        path: String,
        key: &str,
        owner: Owner,
        found: &mut Vec<usize>,
    ) {
        let Some(&seg) = self.segment_index.get(key) else {
            self.problem(path, format!("unknown segment {key:?}"));
            return;
        };
        if found.contains(&seg) {
            // Listed twice: evaluated once.
            return;
        }
        match owner {
            Owner::Segment(from) if from == seg => {
                self.problem(path, format!("segment {key:?} cannot refer to itself"));
                return;
            }
            Owner::Segment(from) => self.segment_edges[from].push((seg, path)),
            Owner::Flag(flag) => self.flag_segments[flag].push(seg),
        }
        found.push(seg);
    }

    /// Rejects cycles and over-long chains among prerequisites and among
    /// segments, reporting each at the reference that closes it.
    pub(super) fn check_chains(&mut self) {
        let flag_names: Vec<&str> = self.file.flags.iter().map(|f| f.key.as_str()).collect();
        let seg_names: Vec<&str> = self.file.segments.iter().map(|s| s.key.as_str()).collect();
        let flag_edges = std::mem::take(&mut self.flag_edges);
        let seg_edges = std::mem::take(&mut self.segment_edges);
        let flag_cycles = self.check_graph(
            &flag_edges,
            &flag_names,
            "prerequisite",
            "flags",
            "prerequisites",
        );
        let segment_cycles =
            self.check_graph(&seg_edges, &seg_names, "segment", "segments", "rules");
        if !flag_cycles && !segment_cycles {
            self.check_cost(&flag_edges, &seg_edges);
        }
    }

    /// Bounds the work of one evaluation (see [`MAX_EVALUATION_COST`]) over
    /// the graph of flags and segments, which has no cycle by now.
    fn check_cost(
        &mut self,
        flag_edges: &[Vec<(usize, String)>],
        seg_edges: &[Vec<(usize, String)>],
    ) {
        let flags = self.file.flags.len();
        // Nodes: flags 0..flags, then segments.
        let own = |conditions: usize| conditions.saturating_add(1);
        let mut children: Vec<Vec<usize>> = Vec::with_capacity(flags + seg_edges.len());
        let mut own_cost: Vec<usize> = Vec::with_capacity(flags + seg_edges.len());
        for (i, flag) in self.file.flags.iter().enumerate() {
            let mut c: Vec<usize> = flag_edges[i].iter().map(|(f, _)| *f).collect();
            c.extend(self.flag_segments[i].iter().map(|s| flags + s));
            children.push(c);
            own_cost.push(own(flag.rules.iter().map(|r| r.conditions.len()).sum()));
        }
        for (j, segment) in self.file.segments.iter().enumerate() {
            children.push(seg_edges[j].iter().map(|(s, _)| flags + s).collect());
            own_cost.push(own(segment.rules.iter().map(|r| r.conditions.len()).sum()));
        }
        let n = children.len();
        let mut cost: Vec<Option<usize>> = vec![None; n];
        for root in 0..n {
            // Iterative post-order: children's costs first.
            let mut stack = vec![root];
            while let Some(&node) = stack.last() {
                if cost[node].is_some() {
                    stack.pop();
                    continue;
                }
                let pending: Vec<usize> = children[node]
                    .iter()
                    .copied()
                    .filter(|c| cost[*c].is_none())
                    .collect();
                if !pending.is_empty() {
                    stack.extend(pending);
                    continue;
                }
                stack.pop();
                let child_costs: Vec<usize> =
                    children[node].iter().filter_map(|c| cost[*c]).collect();
                let total = child_costs
                    .iter()
                    .fold(own_cost[node], |sum, c| sum.saturating_add(*c));
                cost[node] = Some(total);
                if total > MAX_EVALUATION_COST
                    && child_costs.iter().all(|c| *c <= MAX_EVALUATION_COST)
                {
                    let (path, name) = if node < flags {
                        (format!("flags[{node}]"), self.file.flags[node].key.as_str())
                    } else {
                        let j = node - flags;
                        (format!("segments[{j}]"), self.file.segments[j].key.as_str())
                    };
                    self.problem(
                        path,
                        format!(
                            "evaluating {name:?} may check up to {total} conditions, counting every path \
                             through its prerequisites and segments; at most {MAX_EVALUATION_COST} allowed"
                        ),
                    );
                }
            }
        }
    }

    fn check_graph(
        &mut self,
        edges: &[Vec<(usize, String)>],
        names: &[&str],
        what: &str,
        list: &str,
        field: &str,
    ) -> bool {
        const WHITE: u8 = 0;
        const GRAY: u8 = 1;
        const BLACK: u8 = 2;
        let n = edges.len();
        let mut color = vec![WHITE; n];
        let mut depth = vec![0usize; n];
        let mut reported: HashSet<String> = HashSet::new();
        let mut cyclic = false;
        // Iterative depth-first search: a long chain must not overflow the stack.
        for root in 0..n {
            if color[root] != WHITE {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            color[root] = GRAY;
            while let Some(&(node, next)) = stack.last() {
                if let Some((child, _)) = edges[node].get(next) {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    match color[*child] {
                        WHITE => {
                            color[*child] = GRAY;
                            stack.push((*child, 0));
                        }
                        GRAY => {
                            // Report every reference on the cycle, so each
                            // flag (or segment) involved is pointed at.
                            let start = stack.iter().position(|&(s, _)| s == *child).unwrap_or(0);
                            let mut cycle: Vec<&str> =
                                stack[start..].iter().map(|&(s, _)| names[s]).collect();
                            cycle.push(names[*child]);
                            let message = format!("{what} cycle: {}", cycle.join(" -> "));
                            cyclic = true;
                            for &(s, taken) in &stack[start..] {
                                let edge_path = &edges[s][taken - 1].1;
                                if reported.insert(edge_path.clone()) {
                                    self.problem(edge_path.clone(), message.clone());
                                }
                            }
                        }
                        _ => {}
                    }
                } else {
                    stack.pop();
                    color[node] = BLACK;
                    depth[node] = edges[node]
                        .iter()
                        .map(|(c, _)| depth[*c] + 1)
                        .max()
                        .unwrap_or(0);
                    if depth[node] == MAX_CHAIN_DEPTH + 1 {
                        self.problem(
                            format!("{list}[{node}].{field}"),
                            format!(
                                "{what} chain from {:?} is {} deep, at most {MAX_CHAIN_DEPTH} allowed",
                                names[node], depth[node]
                            ),
                        );
                    }
                }
            }
        }
        cyclic
    }
}
