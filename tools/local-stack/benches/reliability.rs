//! The reliability suite of issue 7 at full size, printing one figure per scenario (how many
//! cases were tried, how many held). Run with `scripts/reliability.sh`; BENCHMARKS.md records
//! the figures. The same scenarios run smaller in `tests/reliability.rs`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use support::api::Api;
use support::reliability::{self, Figure, PipelineRun};

#[tokio::main]
async fn main() {
    let mut figures: Vec<Figure> = Vec::new();
    let api = Api::start().await;
    figures.push(reliability::auth_matrix(&api).await);
    figures.push(reliability::concurrent_duplicates(&api, 50).await);
    api.stack.stop().await;

    let template = reliability::with_visibility_timeout(&support::project_template_text(), 1);
    let api = Api::start_from(&template, &support::endpoint(), BTreeMap::new()).await;
    figures.push(reliability::poison(&api).await);
    api.stack.stop().await;

    let run =
        PipelineRun { notifications: 2000, users: 100, restarts: 2, provider_faults: 0.2, infrastructure_faults: 0.2 };
    figures.extend(reliability::pipeline_under_faults(&support::endpoint(), run).await);

    println!("# Reliability suite ({})\n", notify::time::now_rfc3339());
    println!("| scenario | tried | held | notes |\n|---|---:|---:|---|");
    for figure in &figures {
        figure.print();
    }
    if figures.iter().any(|figure| !figure.failures.is_empty()) {
        std::process::exit(1);
    }
}
