//! A plan as a document a person reads before anything changes.

use super::Plan;
use super::fan_out::FanOut;

pub fn render_plan(plan: &Plan) -> String {
    let mut out = format!("# Plan: {}\n\n", plan.instruction.trim());
    if !plan.summary.is_empty() {
        out.push_str(&format!("{}\n\n", plan.summary));
    }
    if !plan.planned_by.is_empty() {
        out.push_str(&format!("Planned by: {}\n\n", plan.planned_by));
    }
    if plan.steps.is_empty() {
        out.push_str("No step of this plan can run.\n");
    } else {
        out.push_str("## Steps\n\n");
        for step in &plan.steps {
            if step.part_of.is_some() {
                if let Some(fan_out) = plan.fan_out_starting_at(step) {
                    push_fan_out(&mut out, plan, fan_out);
                }
                continue;
            }
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
    for fan_out in plan
        .fan_outs
        .iter()
        .filter(|fan_out| fan_out.jobs.is_empty())
    {
        push_fan_out(&mut out, plan, fan_out);
    }
    if !plan.rejected.is_empty() {
        out.push_str("\n## Steps that cannot run\n\n");
        for rejected in &plan.rejected {
            out.push_str(&format!("- step {}: {}\n", rejected.id, rejected.reason));
        }
    }
    out
}

/// "2. **update_references** src/pricing.rs `total_price`: 24 uses in 24 files, 24 jobs"
/// and each job, then the uses no job changes.
fn push_fan_out(out: &mut String, plan: &Plan, fan_out: &FanOut) {
    out.push_str(&format!(
        "{}. **update_references** {} `{}`: {} ({} uses in {} files: {} jobs)\n",
        fan_out.step,
        fan_out.file,
        fan_out.symbol,
        fan_out.instruction,
        fan_out.sites,
        fan_out.files,
        fan_out.jobs.len()
    ));
    for job in fan_out.jobs.iter().filter_map(|id| plan.step(*id)) {
        out.push_str(&format!("   - {}. {} `{}`\n", job.id, job.file, job.target));
    }
    for (place, reason) in &fan_out.not_done {
        out.push_str(&format!("   - not done: {place}: {reason}\n"));
    }
}
