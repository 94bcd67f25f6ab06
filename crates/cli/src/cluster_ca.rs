//! `hoist cluster ca`: shows the cluster's CA, and `--rotate` replaces it (Swarm's
//! `swarm ca --rotate`), by default waiting until every node holds a certificate of the
//! new CA and the old one is trusted no more.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use hoist_api::endpoint as api;
use hoist_api::{CaView, Client};

/// Arguments of `hoist cluster ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Replace the CA: a new key signs every node's next certificate; the old CA is
    /// refused once every node has one. After a key leak this is the way back.
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate, return once the rotation has started instead of waiting for it.
    #[arg(long, short)]
    pub detach: bool,
    /// `json` for machine-readable output.
    #[arg(long)]
    pub format: Option<String>,
}

/// How often a waiting `--rotate` asks how far the rotation has come.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, args: CaArgs) -> anyhow::Result<()> {
    let json = match args.format.as_deref() {
        None => false,
        Some("json") => true,
        Some(other) => bail!("--format {other:?}: the only format is json"),
    };
    if args.detach && !args.rotate {
        bail!("--detach goes with --rotate");
    }
    let mut view: CaView = if args.rotate {
        client.call::<api::CaRotate>(&(), &()).await?
    } else {
        client.call::<api::CaStatus>(&(), &()).await?
    };
    if args.rotate && !args.detach {
        let mut shown = None;
        while view.rotating {
            let progress = (view.nodes_renewed, view.nodes);
            if !json && shown != Some(progress) {
                eprintln!(
                    "rotating the CA: {} of {} nodes hold a certificate of the new CA (waiting for {})",
                    view.nodes_renewed,
                    view.nodes,
                    view.waiting_for.join(", ")
                );
                shown = Some(progress);
            }
            tokio::time::sleep(POLL).await;
            view = client.call::<api::CaStatus>(&(), &()).await?;
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if view.rotating {
        outln!(
            "CA rotation under way: {} of {} nodes hold a certificate of the new CA (waiting for {}).",
            view.nodes_renewed,
            view.nodes,
            view.waiting_for.join(", ")
        );
    } else if args.rotate {
        outln!("CA rotated: every node holds a certificate of the new CA; the old CA is refused.");
    }
    outln!("CA digest: {}", view.digest);
    if args.rotate {
        outln!("Join tokens carry the new digest: get them again with `hoist join-token`.");
    } else {
        out!("{}", view.cert_pem);
    }
    Ok(())
}
