//! `route`: which backend a bundle would go to, and why, without creating anything.

use crate::backend::Exit;
use crate::bundle::Bundle;
use crate::cli::{GlobalOpts, RouteArgs};
use crate::error::Result;
use crate::{config, ids, routing};

pub fn route(global: &GlobalOpts, args: &RouteArgs) -> Result<Exit> {
    ids::validate(&args.id)?;
    let bundle = Bundle::outline(&args.bundle)?;
    let loaded = config::load(global.config.as_deref())?;
    let route = routing::route(&loaded.config, &args.id, &bundle.annotations())?;
    println!(
        "{} ({}; config: {})",
        route.backend, route.reason, loaded.source
    );
    Ok(0)
}
