//! A plan as a document a person reads before anything changes.

use super::Plan;

pub fn render_plan(plan: &Plan) -> String {
    let mut out = format!("# Plan: {}\n\n", plan.instruction.trim());
    if !plan.summary.is_empty() {
        out.push_str(&format!("{}\n\n", plan.summary));
    }
    if plan.steps.is_empty() {
        out.push_str("No step of this plan can run.\n");
    } else {
        out.push_str("## Steps\n\n");
        for step in &plan.steps {
            let target = if step.target.is_empty() {
                String::new()
            } else {
                format!(" `{}`", step.target)
            };
            let after = if step.depends_on.is_empty() {
                String::new()
            } else {
                let ids: Vec<String> = step.depends_on.iter().map(u32::to_string).collect();
                format!(" (after {})", ids.join(", "))
            };
            out.push_str(&format!(
                "{}. **{}** {}{target}{after}: {}\n",
                step.id,
                step.action.name(),
                step.file,
                step.instruction
            ));
        }
    }
    if !plan.rejected.is_empty() {
        out.push_str("\n## Steps that cannot run\n\n");
        for rejected in &plan.rejected {
            out.push_str(&format!("- step {}: {}\n", rejected.id, rejected.reason));
        }
    }
    out
}
