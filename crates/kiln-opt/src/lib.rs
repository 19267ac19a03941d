//! # kiln-opt
//!
//! Graph passes written as rewrite rules. Each [`Rule`] has a name (used in
//! logs, reports and errors), a [`Level`], and one entry point that checks the
//! rule's guards at one node and, if they all hold, applies one patch.
//!
//! The [`optimize`] pass manager runs the enabled rules, in the documented
//! order of [`rules::all_rules`], over every node, repeating the whole sequence
//! until no rule applies (a fixed point), then re-sorts the graph and re-infers
//! types. Levels follow ONNX Runtime's graph optimization levels:
//!
//! | level | rules |
//! |---|---|
//! | `basic` | semantics-preserving cleanups: constant folding, Identity/Dropout/no-op removal, Transpose-pair cancellation, common-subexpression elimination, dead nodes and initializers |
//! | `extended` | basic + fusions: BatchNormalization folding, Pad folding, per-channel Mul/Add folding, MatMul+Add to Gemm, activation and residual-Add fusion into kiln's fused ops |
//! | `all` | extended + layout-dependent rewrites (none yet) |
//!
//! Fused ops (`kiln::FusedConv`, `kiln::FusedGemm`, `kiln::FusedMatMul`) are
//! defined in `kiln_ir::ops::fused`; the ONNX exporter lowers them back to
//! standard ONNX.
#![warn(missing_docs)]

mod ctx;
pub mod rules;

pub use ctx::Ctx;

use kiln_ir::{IrError, Model};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Optimization level, as ONNX Runtime's `GraphOptimizationLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Cleanups and constant folding only.
    Basic,
    /// Basic plus fusions.
    Extended,
    /// Everything, including layout-dependent rewrites.
    All,
}

impl Level {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Level::Basic => "basic",
            Level::Extended => "extended",
            Level::All => "all",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "basic" => Ok(Level::Basic),
            "extended" => Ok(Level::Extended),
            "all" => Ok(Level::All),
            _ => Err(format!("unknown optimization level '{s}' (basic, extended, all)")),
        }
    }
}

/// An optimizer error: the rule that raised it and the IR error (which names
/// node, op and attribute).
#[derive(Debug, Clone)]
pub struct OptError {
    /// Name of the rule that failed (`None` for the pass manager itself).
    pub rule: Option<&'static str>,
    /// The underlying error.
    pub error: IrError,
}

impl fmt::Display for OptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Some(r) => write!(f, "rule '{r}': {}", self.error),
            None => write!(f, "optimizer: {}", self.error),
        }
    }
}

impl std::error::Error for OptError {}

impl From<IrError> for OptError {
    fn from(error: IrError) -> OptError {
        OptError { rule: None, error }
    }
}

/// A rewrite rule: guards first, then one patch.
pub trait Rule: Send + Sync {
    /// Stable kebab-case name, e.g. `fold-batchnorm-into-conv`.
    fn name(&self) -> &'static str;
    /// Lowest level at which the rule runs.
    fn level(&self) -> Level;
    /// One-line description for `--report` and docs.
    fn describe(&self) -> &'static str;
    /// Checks the rule's guards with `node` (an index into
    /// `cx.model.graph.nodes`) as the anchor; if they all hold, applies one
    /// patch and returns `Ok(true)`. Returns `Ok(false)` and leaves the graph
    /// untouched when any guard fails.
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError>;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Highest level of rules to run.
    pub level: Level,
    /// Rule names not to run.
    pub disabled: BTreeSet<String>,
    /// Upper bound on fixed-point rounds (a guard against rules that undo each other).
    pub max_rounds: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            level: Level::All,
            disabled: BTreeSet::new(),
            max_rounds: 100,
        }
    }
}

/// Per-rule outcome of one optimization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleReport {
    /// Rule name.
    pub name: &'static str,
    /// Rule level.
    pub level: Level,
    /// Whether the rule ran (enabled at this level and not disabled).
    pub enabled: bool,
    /// How many times its patch was applied. One patch is one rewrite at one
    /// anchor node; the whole-graph sweeps (`remove-unused-initializers`,
    /// `merge-duplicate-initializers`) count one per sweep that changed something.
    pub applied: usize,
}

/// What [`optimize`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One entry per known rule, in run order.
    pub rules: Vec<RuleReport>,
    /// Node count before.
    pub nodes_before: usize,
    /// Node count after.
    pub nodes_after: usize,
    /// Fixed-point rounds run (the last one applied nothing).
    pub rounds: usize,
    /// Every patch applied, in order: the log of the run.
    pub events: Vec<Applied>,
}

/// One applied patch: the rule and the anchor node it fired at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Rule name.
    pub rule: &'static str,
    /// Name of the anchor node (as it was before the patch).
    pub node: String,
    /// Op type of the anchor node.
    pub op_type: String,
}

impl Report {
    /// Applications per rule name (only rules that applied at least once).
    pub fn applied(&self) -> BTreeMap<&'static str, usize> {
        self.rules
            .iter()
            .filter(|r| r.applied > 0)
            .map(|r| (r.name, r.applied))
            .collect()
    }
}

/// Optimizes `model` in place with the rules of [`rules::all_rules`] that
/// `opts` enables, to a fixed point.
///
/// Errors: an unknown rule name in `opts.disabled`; a rule failing (the error
/// names the rule, node and op); no fixed point within `opts.max_rounds`; the
/// result failing validation or shape inference (a bug in a rule).
pub fn optimize(model: &mut Model, opts: &Options) -> Result<Report, OptError> {
    let all = rules::all_rules();
    for d in &opts.disabled {
        if !all.iter().any(|r| r.name() == d) {
            let names: Vec<&str> = all.iter().map(|r| r.name()).collect();
            return Err(OptError::from(kiln_ir::ir_err!(
                InvalidInput,
                "unknown rule '{d}' (rules: {})",
                names.join(", ")
            )));
        }
    }
    model.graph.validate()?;
    let nodes_before = model.graph.nodes.len();
    let mut reports: Vec<RuleReport> = all
        .iter()
        .map(|r| RuleReport {
            name: r.name(),
            level: r.level(),
            enabled: r.level() <= opts.level && !opts.disabled.contains(r.name()),
            applied: 0,
        })
        .collect();
    let mut rounds = 0;
    let mut events = Vec::new();
    loop {
        rounds += 1;
        if rounds > opts.max_rounds {
            return Err(OptError::from(kiln_ir::ir_err!(
                Internal,
                "no fixed point after {} rounds (rules undoing each other?)",
                opts.max_rounds
            )));
        }
        let mut changed = false;
        for (rule, rep) in all.iter().zip(reports.iter_mut()) {
            if !rep.enabled {
                continue;
            }
            let n = run_rule(rule.as_ref(), model, &mut events)?;
            rep.applied += n;
            changed |= n > 0;
        }
        if !changed {
            break;
        }
    }
    model.graph.validate()?;
    kiln_ir::infer::infer_types(model)?;
    Ok(Report {
        rules: reports,
        nodes_before,
        nodes_after: model.graph.nodes.len(),
        rounds,
        events,
    })
}

/// Runs one rule over every node until it no longer applies; returns the
/// number of patches.
fn run_rule(rule: &dyn Rule, model: &mut Model, events: &mut Vec<Applied>) -> Result<usize, OptError> {
    let mut applied = 0;
    let mut i = 0;
    let mut cx = Ctx::new(model).map_err(|e| OptError {
        rule: Some(rule.name()),
        error: e,
    })?;
    while i < cx.model.graph.nodes.len() {
        let (node, op_type) = (cx.node(i).name.clone(), cx.node(i).op_type.clone());
        let hit = rule.apply(&mut cx, i).map_err(|e| OptError {
            rule: Some(rule.name()),
            error: e,
        })?;
        if hit {
            applied += 1;
            events.push(Applied {
                rule: rule.name(),
                node,
                op_type,
            });
            cx.refresh().map_err(|e| OptError {
                rule: Some(rule.name()),
                error: e,
            })?;
            // Stay at `i`: the node now there may match again. A match the
            // patch enabled before `i` is found in the next round.
            if applied > 1_000_000 {
                return Err(OptError {
                    rule: Some(rule.name()),
                    error: kiln_ir::ir_err!(Internal, "applied over a million times: not converging"),
                });
            }
        } else {
            i += 1;
        }
    }
    Ok(applied)
}
