pub async fn run(_args: hoist_cli::DemoArgs) -> anyhow::Result<()> { anyhow::bail!("todo") }
