//! `zero`, the zerocore command line: runs a node (`zero serve`) and the component tools
//! (`zero convert`, `zero inspect`, `zero run`). It only parses arguments and calls the
//! libraries; all behavior lives in the crates it calls.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zero_component::{AdapterKind, WasmKind};
use zero_node::{LogFormat, Node, NodeConfig};

#[derive(Parser)]
#[command(
    name = "zero",
    version,
    about = "zerocore: run WebAssembly components next to their owners' data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node that serves the apps declared in its configuration file.
    Serve {
        /// The node's configuration file.
        #[arg(long, short, default_value = "zerocore.toml")]
        config: PathBuf,
        /// Listen address for HTTP, overriding [http] listen (use port 0 for any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory, overriding [node] data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log format, overriding [log] format.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Turn a core module (e.g. built for wasm32-wasip1) into a component.
    Convert {
        /// The core module.
        input: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
        /// WASI adapter: command, reactor or proxy (default: inferred from the exports).
        #[arg(long)]
        adapter: Option<AdapterKind>,
    },
    /// Show what a wasm file is, what it imports and exports, its size and content hash.
    Inspect {
        /// The file.
        file: PathBuf,
    },
    /// Run a command component (wasi:cli/run) with this terminal's stdio; its exit code becomes ours.
    Run {
        /// The component.
        file: PathBuf,
        /// Preopen a host directory: HOST or HOST::GUEST (repeatable).
        #[arg(long = "dir", value_name = "HOST[::GUEST]")]
        dirs: Vec<String>,
        /// Set an environment variable: KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        envs: Vec<String>,
        /// Arguments passed to the component.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            log_format,
        } => {
            let mut cfg = NodeConfig::load(&config)?;
            if let Some(l) = listen {
                cfg.http.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.node.data_dir = std::env::current_dir()?.join(d);
            }
            if let Some(f) = log_format {
                cfg.log.format = if f == "json" {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                };
            }
            zero_node::init_logging(cfg.log.format, &cfg.log.level)?;
            let node = Node::start(cfg).await?;
            println!("zero node ready: curl http://{}/", node.http_addr());
            node.run_until_signal().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert {
            input,
            output,
            adapter,
        } => {
            let bytes = read(&input)?;
            let name = input.display().to_string();
            let (component, used) = zero_component::convert(&bytes, &name, adapter)?;
            std::fs::write(&output, &component)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            println!(
                "wrote {} ({} bytes, {used} adapter)",
                output.display(),
                component.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file } => {
            let bytes = read(&file)?;
            let name = file.display().to_string();
            let info = zero_component::inspect(&bytes, &name)?;
            println!("file:    {name}");
            println!("kind:    {}", info.kind);
            println!("size:    {} bytes", info.size);
            println!("hash:    {}", info.hash);
            println!("imports: ({})", info.imports.len());
            for i in &info.imports {
                println!("  {i}");
            }
            println!("exports: ({})", info.exports.len());
            for e in &info.exports {
                println!("  {e}");
            }
            if !info.custom_sections.is_empty() {
                println!("custom sections: {}", info.custom_sections.join(", "));
            }
            if info.kind == WasmKind::CoreModule {
                println!(
                    "note: this is a core module; make it a component with `zero convert {name} -o app.wasm`"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            dirs,
            envs,
            args,
        } => {
            let bytes = read(&file)?;
            let mut opts = zerocore::command::CommandOptions {
                program_name: file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "main.wasm".into()),
                args,
                ..Default::default()
            };
            for d in dirs {
                let (host, guest) = match d.split_once("::") {
                    Some((h, g)) => (h.to_string(), g.to_string()),
                    None => (d.clone(), d.clone()),
                };
                if host.is_empty() || guest.is_empty() {
                    anyhow::bail!("--dir `{d}`: write HOST or HOST::GUEST");
                }
                opts.dirs.push((PathBuf::from(host), guest));
            }
            for e in envs {
                let Some((k, v)) = e.split_once('=') else {
                    anyhow::bail!("--env `{e}`: write KEY=VALUE");
                };
                if k.is_empty() {
                    anyhow::bail!("--env `{e}`: the variable name is empty");
                }
                opts.env.push((k.to_string(), v.to_string()));
            }
            let code =
                zerocore::command::run_command(&bytes, &file.display().to_string(), opts).await?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}
