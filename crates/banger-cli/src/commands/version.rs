//! `banger version`

use std::process::ExitCode;

use banger_buildinfo::BuildInfo;

use crate::args::JsonFlag;
use crate::output::print_json;

pub(super) fn run(args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let build = BuildInfo::current();
    if args.json {
        print_json(&serde_json::json!({
            "version": build.version,
            "commit": build.commit,
            "build_time": build.build_time(),
            "build_id": build.build_id,
        }))?;
    } else {
        println!("banger {}", build.version);
        println!("commit      {}", build.commit);
        println!("built       {}", build.build_time());
    }
    Ok(ExitCode::SUCCESS)
}
