//! Client commands: each turns its arguments into one or a few control API calls and
//! prints the answer.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use hoist_api::endpoint as api;
use hoist_api::{
    Client, ForceNewClusterResponse, InfoResponse, InitRequest, InitResponse, JoinClusterRequest,
    JoinClusterResponse, LeaveRequest, NodeUpdateRequest, NodeView, TokenResponse,
};
use hoist_types::clock::now_ms;
use hoist_types::service::{format_cpus, format_memory};
use hoist_types::{Availability, DriverKind, Role};

use crate::output::{duration, print_json, print_table, timestamp, timestamp_ago, wants_json};
use crate::{
    BackupArgs, Command, InfoArgs, JoinTokenArgs, ListArgs, NodeCommand, NodeUpdateArgs,
    RestoreArgs,
};

/// Writes a backup, which holds the cluster CA's key and both join secrets, so that no
/// one else can read it at any moment and a crash never leaves half a file: a new file
/// (created exclusively, mode 0600) in the same directory, synced, then renamed over
/// `path`. A symbolic link at `path` is refused, never followed: whoever planted it would
/// choose where the key goes.
pub fn write_backup(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(existing) if existing.file_type().is_symlink() => bail!(
            "refusing to write the backup: {} is a symbolic link (give the path of a regular file, or remove the link)",
            path.display()
        ),
        Ok(existing) if !existing.is_file() => bail!(
            "refusing to write the backup: {} exists and is not a regular file",
            path.display()
        ),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("checking {}", path.display()));
        }
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a new file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", file.path().display()))?;
    // rename(2) replaces the name itself: a link planted after the check above is
    // replaced, not followed.
    file.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("writing {}", path.display()))?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// The default daemon socket when neither --host nor HOIST_HOST is given.
pub const DEFAULT_SOCKET: &str = "/var/run/hoist/hoist.sock";

pub fn client_for(host: Option<&str>) -> anyhow::Result<Client> {
    let host = host.unwrap_or(DEFAULT_SOCKET);
    let path = match host.strip_prefix("unix://") {
        Some(path) => path,
        None if host.starts_with('/') => host,
        None => bail!("unsupported --host {host:?}: use unix:///path/to/hoist.sock"),
    };
    Ok(Client::unix(path)?)
}

/// Runs a client command against the daemon at `host`.
pub async fn run_client(host: Option<&str>, command: Command) -> anyhow::Result<()> {
    let client = client_for(host)?;
    match command {
        Command::Init(args) if args.force_new_cluster => {
            force_new_cluster(&client, args.advertise_addr).await?
        }
        Command::Backup(args) => backup(&client, args).await?,
        Command::Restore(args) => restore(&client, args).await?,
        Command::Init(args) => {
            let request = InitRequest {
                advertise_addr: args.advertise_addr,
                heartbeat_period_ms: args.heartbeat_period,
                heartbeat_grace: args.heartbeat_grace,
                cert_expiry_secs: args.cert_expiry.map(|ms| ms / 1000),
            };
            if request.heartbeat_grace == Some(0) {
                bail!("--heartbeat-grace must be at least 1");
            }
            let response: InitResponse = client.call::<api::Init>(&(), &request).await?;
            print_init(&response)?;
        }
        Command::Join(args) => {
            if let Some(role) = &args.role {
                role.parse::<Role>().map_err(anyhow::Error::msg)?;
            }
            let request = JoinClusterRequest {
                token: args.token,
                manager_addr: args.manager_addr,
                advertise_addr: args.advertise_addr,
                expected_role: args
                    .role
                    .map(|role| role.parse::<Role>())
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
            };
            let response: JoinClusterResponse =
                client.call::<api::JoinCluster>(&(), &request).await?;
            outln!(
                "This node joined a cluster as a {} (node id {}).",
                response.role,
                response.node_id
            );
        }
        Command::JoinToken(args) => join_token(&client, args).await?,
        Command::Leave(args) => {
            let _: api::Empty = client
                .call::<api::Leave>(&(), &LeaveRequest { force: args.force })
                .await?;
            outln!("Node left the cluster.");
        }
        Command::Node(command) => node(&client, command).await?,
        Command::Info(args) => info(&client, args).await?,
        Command::Service(command) => crate::service::run(&client, *command).await?,
        Command::Cluster(command) => crate::cluster::run(&client, command).await?,
        Command::Daemon(_) | Command::Hello(_) | Command::Demo(_) => {
            bail!("this command is not a client command")
        }
    }
    Ok(())
}

/// Writes the daemon's answer to the file as it came, so that a newer daemon's members
/// this build does not know are kept.
async fn backup(client: &Client, args: BackupArgs) -> anyhow::Result<()> {
    let backup: serde_json::Value = client.call_json::<api::Backup>(&(), &()).await?;
    let text = serde_json::to_vec_pretty(&backup)?;
    write_backup(&args.output, &text)?;
    let state = &backup["state"];
    outln!(
        "Backup written to {}: {} nodes, {} services, {} tasks.",
        args.output.display(),
        state["nodes"].as_object().map(|map| map.len()).unwrap_or(0),
        state["services"]
            .as_object()
            .map(|map| map.len())
            .unwrap_or(0),
        state["tasks"].as_object().map(|map| map.len()).unwrap_or(0),
    );
    Ok(())
}

async fn restore(client: &Client, args: RestoreArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let backup = hoist_api::BackupFile::parse(&text).map_err(|err| {
        let file = args.file.display();
        match err {
            hoist_api::BackupParseError::Version(_) => {
                anyhow::anyhow!("{file} cannot be restored: {err}")
            }
            _ => anyhow::anyhow!("{file} is not a hoist backup: {err}"),
        }
    })?;
    let response: ForceNewClusterResponse = client
        .call::<api::Restore>(
            &(),
            &hoist_api::RestoreRequest {
                backup,
                advertise_addr: args.advertise_addr,
            },
        )
        .await?;
    outln!(
        "Cluster {} restored on this node ({}): {} nodes, {} services, {} tasks.",
        response.cluster_id,
        response.node_id,
        response.nodes,
        response.services,
        response.tasks
    );
    print_dropped(&response)?;
    Ok(())
}

async fn force_new_cluster(client: &Client, advertise_addr: Option<String>) -> anyhow::Result<()> {
    let plan: ForceNewClusterResponse = client
        .call::<api::ForceNewCluster>(
            &(),
            &hoist_api::ForceNewClusterRequest {
                dry_run: true,
                advertise_addr: advertise_addr.clone(),
            },
        )
        .await?;
    outln!(
        "Forcing a new cluster from this manager's state. Kept: {} nodes, {} services, {} tasks.",
        plan.nodes,
        plan.services,
        plan.tasks
    );
    let done: ForceNewClusterResponse = client
        .call::<api::ForceNewCluster>(
            &(),
            &hoist_api::ForceNewClusterRequest {
                dry_run: false,
                advertise_addr,
            },
        )
        .await?;
    outln!(
        "Cluster {} now runs with this node ({}) as its only manager: {} nodes, {} services, {} tasks.",
        done.cluster_id, done.node_id, done.nodes, done.services, done.tasks
    );
    print_dropped(&done)
}

fn print_dropped(response: &ForceNewClusterResponse) -> anyhow::Result<()> {
    if !response.dropped_managers.is_empty() {
        outln!(
            "Dropped managers (they must leave and join again with a token): {}",
            response.dropped_managers.join(", ")
        );
    }
    outln!("Add managers again with `hoist join-token manager`.");
    Ok(())
}

fn print_init(response: &InitResponse) -> anyhow::Result<()> {
    outln!(
        "Cluster initialized: current node ({}) is now a manager.\n",
        response.node_id
    );
    outln!("To add a worker to this cluster, run the following command:\n");
    outln!(
        "    hoist join --token {} {}\n",
        response.worker_token,
        response.advertise_addr
    );
    outln!("To add a manager to this cluster, run the following command:\n");
    outln!(
        "    hoist join --token {} {}\n",
        response.manager_token,
        response.advertise_addr
    );
    Ok(())
}

async fn join_token(client: &Client, args: JoinTokenArgs) -> anyhow::Result<()> {
    let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
    let query = api::RotateQuery {
        rotate: args.rotate,
    };
    let response: TokenResponse = if args.rotate {
        client
            .call_with::<api::JoinTokenRotate>(&role, &query, &())
            .await?
    } else {
        client
            .call_with::<api::JoinToken>(&role, &query, &())
            .await?
    };
    if args.quiet {
        outln!("{}", response.token);
        return Ok(());
    }
    if args.rotate {
        outln!("Successfully rotated {role} join token.\n");
    }
    outln!("To add a {role} to this cluster, run the following command:\n");
    outln!(
        "    hoist join --token {} {}\n",
        response.token,
        response.manager_addr
    );
    Ok(())
}

async fn node(client: &Client, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => node_ls(client, args).await,
        NodeCommand::Inspect { node, pretty } => {
            if node.is_empty() {
                bail!("node inspect needs at least one node (id, id prefix, hostname or `self`)");
            }
            let mut views = Vec::new();
            for reference in &node {
                let reference = resolve_self(client, reference).await?;
                let view: NodeView = client.call::<api::NodeInspect>(&reference, &()).await?;
                views.push(view);
            }
            if pretty {
                for view in &views {
                    print_node_pretty(view)?;
                }
                Ok(())
            } else {
                print_json(&views)
            }
        }
        NodeCommand::Update(args) => node_update(client, args).await,
        NodeCommand::Promote { nodes } => {
            each_node(&nodes, "promote", |reference| async move {
                let view: NodeView = client.call::<api::NodePromote>(&reference, &()).await?;
                outln!(
                    "Node {} promoted to a manager in the cluster.",
                    view.node.hostname
                );
                Ok(())
            })
            .await
        }
        NodeCommand::Demote { nodes } => {
            each_node(&nodes, "demote", |reference| async move {
                let view: NodeView = client.call::<api::NodeDemote>(&reference, &()).await?;
                outln!("Manager {} demoted in the cluster.", view.node.hostname);
                Ok(())
            })
            .await
        }
        NodeCommand::Rm { force, nodes } => {
            each_node(&nodes, "rm", |reference| async move {
                let _: api::Empty = client
                    .call_with::<api::NodeRemove>(&reference, &api::ForceQuery { force }, &())
                    .await?;
                outln!("{reference}");
                Ok(())
            })
            .await
        }
    }
}

/// `self` (as in Docker) names the node this daemon runs; anything else is passed on.
async fn resolve_self(client: &Client, reference: &str) -> anyhow::Result<String> {
    if reference != "self" {
        return Ok(reference.to_string());
    }
    let info: InfoResponse = client.call::<api::Info>(&(), &()).await?;
    match info.node_id {
        Some(id) => Ok(id.to_string()),
        None => bail!("`self`: this daemon is not part of a cluster"),
    }
}

/// Runs `action` for each node; like Docker, goes on after a failure and fails at the end.
async fn each_node<F, Fut>(nodes: &[String], verb: &str, action: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if nodes.is_empty() {
        bail!("node {verb} needs at least one node (id, id prefix or hostname)");
    }
    let mut failures = Vec::new();
    for reference in nodes {
        if let Err(err) = action(reference.clone()).await {
            failures.push(format!("{reference}: {err:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

async fn node_ls(client: &Client, args: ListArgs) -> anyhow::Result<()> {
    let json = wants_json(&args.format)?;
    let mut nodes: Vec<NodeView> = client.call::<api::NodeList>(&(), &()).await?;
    nodes.sort_by(|a, b| {
        a.node
            .hostname
            .cmp(&b.node.hostname)
            .then(a.node.id.cmp(&b.node.id))
    });
    if args.quiet {
        for view in &nodes {
            outln!("{}", view.node.id);
        }
        return Ok(());
    }
    if json {
        return print_json(&nodes);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|view| {
            vec![
                format!("{}{}", view.node.id, if view.is_self { " *" } else { "" }),
                view.node.hostname.clone(),
                view.node.status.as_str().to_string(),
                view.node.availability.as_str().to_string(),
                view.manager_status
                    .map(|status| status.to_string())
                    .unwrap_or_default(),
                view.node.addr.clone(),
                engine_text(&view.node.engine),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "ADDRESS",
            "ENGINE",
        ],
        &rows,
    )?;
    Ok(())
}

/// `docker 20.10.24 (fuse-overlayfs), process`, or `process`.
fn engine_text(engine: &hoist_types::EngineInfo) -> String {
    let mut drivers: Vec<String> = engine
        .drivers
        .iter()
        .filter(|driver| *driver != DriverKind::Docker.as_str())
        .cloned()
        .collect();
    if engine
        .drivers
        .iter()
        .any(|driver| driver == DriverKind::Docker.as_str())
    {
        let version = engine.docker_version.clone().unwrap_or_default();
        let storage = engine.storage_driver.clone().unwrap_or_default();
        drivers.insert(0, format!("docker {version} ({storage})"));
    }
    drivers.join(", ")
}

fn print_node_pretty(view: &NodeView) -> anyhow::Result<()> {
    let node = &view.node;
    outln!("ID:\t\t\t{}", node.id);
    outln!("Hostname:\t\t{}", node.hostname);
    outln!(
        "Joined at:\t\t{}",
        timestamp_ago(node.created_at_ms, now_ms())
    );
    outln!("Status:");
    outln!(" State:\t\t\t{}", node.status.as_str());
    if !node.status_message.is_empty() {
        outln!(" Message:\t\t{}", node.status_message);
    }
    outln!(" Availability:\t\t{}", node.availability.as_str());
    outln!(" Address:\t\t{}", node.addr);
    if let Some(status) = &view.manager_status {
        outln!("Manager Status:\t\t{status}");
    }
    if !node.labels.is_empty() {
        outln!("Labels:");
        for (key, value) in &node.labels {
            outln!(" - {key}={value}");
        }
    }
    // Docker's `node inspect --pretty` spells the node's resources this way.
    outln!("Resources:");
    let known = |value: u64, text: String| {
        if value == 0 {
            "unknown".to_owned()
        } else {
            text
        }
    };
    outln!(
        " CPUs:\t\t\t{}",
        known(
            node.resources.nano_cpus,
            format_cpus(node.resources.nano_cpus)
        )
    );
    outln!(
        " Memory:\t\t{}",
        known(
            node.resources.memory_bytes,
            format_memory(node.resources.memory_bytes)
        )
    );
    outln!("Engine:");
    outln!(" Drivers:\t\t{}", node.engine.drivers.join(", "));
    if let Some(version) = &node.engine.docker_version {
        outln!(" Docker version:\t{version}");
    }
    if let Some(driver) = &node.engine.storage_driver {
        outln!(" Storage driver:\t{driver}");
    }
    outln!();
    Ok(())
}

async fn node_update(client: &Client, args: NodeUpdateArgs) -> anyhow::Result<()> {
    let availability = args
        .availability
        .as_deref()
        .map(str::parse::<Availability>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut label_add = BTreeMap::new();
    for label in &args.label_add {
        let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
        if key.is_empty() {
            bail!("invalid --label-add {label:?}: expected KEY=VALUE");
        }
        label_add.insert(key.to_string(), value.to_string());
    }
    if availability.is_none() && label_add.is_empty() && args.label_rm.is_empty() {
        bail!("node update needs --availability, --label-add or --label-rm");
    }
    let request = NodeUpdateRequest {
        availability,
        label_add,
        label_rm: args.label_rm,
    };
    let _: NodeView = client
        .call::<api::NodeUpdate>(&args.node, &request)
        .await
        .with_context(|| format!("updating node {}", args.node))?;
    outln!("{}", args.node);
    Ok(())
}

async fn info(client: &Client, args: InfoArgs) -> anyhow::Result<()> {
    let json = wants_json(&args.format)?;
    let info: InfoResponse = client.call::<api::Info>(&(), &()).await?;
    if json {
        return print_json(&info);
    }
    let Some(cluster_id) = &info.cluster_id else {
        outln!("Cluster: inactive");
        outln!(" Hostname: {}", info.hostname);
        outln!(" This daemon is not part of a cluster: run `hoist init` or `hoist join`.");
        return Ok(());
    };
    if let Some(message) = &info.removed {
        outln!("Cluster: removed");
        outln!(" Cluster ID: {cluster_id}");
        if let Some(node_id) = info.node_id {
            outln!(" Node ID: {node_id}");
        }
        outln!(" Hostname: {}", info.hostname);
        outln!(" The cluster no longer counts this node: {message}");
        outln!(
            " To take part again: `hoist leave --force` here, then `hoist join` with a token from a manager."
        );
        return Ok(());
    }
    if let Some(reason) = &info.no_quorum {
        outln!("Cluster: no quorum (this manager cannot reach a majority of managers)");
        outln!(" {reason}");
        outln!(" What follows is this manager's last applied state; it may be out of date.");
        outln!(
            " If the other managers are gone for good, run `hoist init --force-new-cluster` on the surviving manager with the highest commit index: it becomes a one-manager cluster keeping every node, service and task."
        );
    } else if info.manager_reachable == Some(false) {
        outln!("Cluster: active (no manager answers this node's heartbeats now)");
    } else {
        outln!("Cluster: active");
    }
    outln!(" Cluster ID: {cluster_id}");
    if let Some(node_id) = info.node_id {
        outln!(" Node ID: {node_id}");
    }
    outln!(" Hostname: {}", info.hostname);
    if let Some(role) = info.role {
        outln!(
            " Role: {role}{}",
            if info.is_leader { " (leader)" } else { "" }
        );
    }
    if let Some(leader) = info.leader {
        outln!(
            " Leader: {leader}{}",
            info.leader_addr
                .as_deref()
                .map(|addr| format!(" at {addr}"))
                .unwrap_or_default()
        );
    } else if info.role == Some(Role::Worker) {
        if let Some(addr) = &info.leader_addr {
            outln!(" Manager it beats to: {addr}");
        }
        outln!(" Managers known: {}", info.managers);
    }
    if info.role == Some(Role::Manager) {
        outln!(" Managers: {}", info.managers);
        outln!(" Quorum: {}", info.quorum);
        outln!(" Nodes: {}", info.nodes);
        outln!(" Raft:");
        outln!("  Term: {}", info.raft_term);
        outln!("  Commit index: {}", info.raft_commit_index);
    }
    outln!(" Dispatcher:");
    if info.heartbeat_period_ms > 0 {
        outln!("  Heartbeat period: {}", duration(info.heartbeat_period_ms));
    } else {
        outln!("  Heartbeat period: not known yet (no heartbeat answered)");
    }
    // Only managers hold the cluster's settings; a worker shows what it was told.
    if info.role == Some(Role::Manager) {
        outln!("  Heartbeat grace: {} periods", info.heartbeat_grace);
        outln!(" CA configuration:");
        outln!(
            "  Expiry duration: {}",
            duration(info.cert_expiry_secs.saturating_mul(1000))
        );
    }
    if let Some(not_after) = info.cert_not_after {
        outln!(" Node certificate:");
        outln!(
            "  Valid until: {}",
            timestamp(u64::try_from(not_after).unwrap_or(0).saturating_mul(1000))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::write_backup;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_backup_is_a_new_private_file_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_backup(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        // A new file, not the old one rewritten: the old mode does not carry over.
        assert_eq!(mode(&path), 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["backup.json".to_string()], "no temp file left");
    }

    #[test]
    fn a_link_or_a_directory_at_the_backup_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("backup.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", write_backup(&link, b"secret").unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // A dangling link too: following it would create the file where it points.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(write_backup(&dangling, b"secret").is_err());
        assert!(!dir.path().join("nowhere").exists());
        let err = format!("{:#}", write_backup(dir.path(), b"secret").unwrap_err());
        assert!(err.contains("not a regular file"), "{err}");
    }
}
