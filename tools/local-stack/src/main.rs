//! `local-stack`: starts the emulator (unless told to use another endpoint), provisions
//! template.yaml into it, serves the API and runs every event source until Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aws_config::BehaviorVersion;
use clap::{Parser, ValueEnum};
use local_stack::provider_account::Quotas;
use local_stack::template::Template;
use local_stack::{Clients, StackError, demo, emulator_config, start_project};
use tokio::process::{Child, Command};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Emulator {
    /// Start the project's pinned moto server and use it.
    Moto,
    /// Use the standard AWS configuration (AWS_ENDPOINT_URL for LocalStack, or real AWS).
    None,
}

#[derive(Debug, Parser)]
#[command(version, about = "Runs template.yaml locally: queues, tables, routes, event-source mappings, schedules")]
struct Args {
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Prefix of every resource name.
    #[arg(long, default_value = "notify-local")]
    stack_name: String,
    #[arg(long, default_value_t = 3000, env = "NOTIFY_API_PORT")]
    api_port: u16,
    #[arg(long, value_enum, default_value = "moto")]
    emulator: Emulator,
    /// The emulator's launcher: the pinned moto with DynamoDB's one-write-at-a-time behaviour.
    #[arg(long, default_value = "tools/emulator/moto-server")]
    moto_server: PathBuf,
    #[arg(long, default_value_t = 4566, env = "NOTIFY_EMULATOR_PORT")]
    emulator_port: u16,
    /// Where to write the stack's outputs for notifyctl.
    #[arg(long, default_value = ".notify/local-outputs.json")]
    outputs_file: PathBuf,
    /// A template parameter, NAME=VALUE (repeatable).
    #[arg(long = "parameter", value_parser = parse_parameter)]
    parameters: Vec<(String, String)>,
    /// The simulated account's SES sending rate (MaxSendRate), emails per second.
    #[arg(long, default_value_t = Quotas::default().email)]
    email_quota: f64,
    /// The simulated account's SNS SMS rate, messages per second.
    #[arg(long, default_value_t = Quotas::default().sms)]
    sms_quota: f64,
    /// The simulated account's SNS Publish rate (mobile push), messages per second.
    #[arg(long, default_value_t = Quotas::default().push)]
    push_quota: f64,
}

fn parse_parameter(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| "expected NAME=VALUE".into())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    notify::telemetry::init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("local-stack: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), StackError> {
    let text = std::fs::read_to_string(&args.template)
        .map_err(|error| StackError::Template(format!("cannot read {}: {error}", args.template.display())))?;
    let template = Template::parse(&text)?;

    let (sdk, mut emulator) = match args.emulator {
        Emulator::Moto => {
            let endpoint = format!("http://127.0.0.1:{}", args.emulator_port);
            let child = start_moto(&args.moto_server, args.emulator_port)?;
            (emulator_config(&endpoint).await, Some((child, endpoint)))
        }
        Emulator::None => (aws_config::defaults(BehaviorVersion::latest()).load().await, None),
    };
    let clients = Clients::new(&sdk);
    if let Some((child, _)) = emulator.as_mut() {
        wait_for_emulator(&clients, child).await?;
    }

    let given: BTreeMap<String, String> = args.parameters.into_iter().collect();
    let api_address = SocketAddr::from(([127, 0, 0, 1], args.api_port));
    let quotas = Quotas { email: args.email_quota, sms: args.sms_quota, push: args.push_quota };
    let (stack, _) = start_project(&sdk, &template, &args.stack_name, &given, api_address, quotas).await?;
    let app = demo::seed(&clients, &stack.deployed).await?;
    let outputs = stack.outputs(emulator.as_ref().map(|(_, endpoint)| endpoint.as_str()));
    notify::outputs::Outputs::write(&args.outputs_file, &outputs)?;

    let body = format!(
        r#"{{"user_id":"{}","template":"{}","params":{{"name":"Ada"}},"channels":["sms"]}}"#,
        demo::DEMO_USER,
        demo::DEMO_TEMPLATE
    );
    println!("notify is running locally (stack {:?}, AWS endpoint {})", args.stack_name, clients.endpoint);
    println!();
    println!("  API:         {}", stack.api_url);
    println!("  app key:     {}", app.app_key);
    println!("  app secret:  {}   (shown once)", app.app_secret);
    println!();
    println!("Send an SMS to the demo user ({}):", demo::DEMO_PHONE);
    println!();
    println!("  curl -i -u '{}:{}' -H 'content-type: application/json' \\", app.app_key, app.app_secret);
    println!("    -d '{body}' {}/v1/notifications", stack.api_url);
    if let Some((_, endpoint)) = &emulator {
        println!();
        println!("Then see it in the emulator's SNS:");
        println!();
        println!(
            "  curl -s {endpoint}/moto-api/data.json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[\"sns\"][\"SMS\"], indent=2))'"
        );
    }
    if let (Some((_, endpoint)), Some(queue)) = (&emulator, outputs.get("NotificationEventsQueueUrl")) {
        println!();
        println!("Every event of the stream (schemas/notification-event.v1.json) lands in the events queue:");
        println!();
        println!(
            "  curl -s {endpoint} -H 'x-amz-target: AmazonSQS.ReceiveMessage' -H 'content-type: application/x-amz-json-1.0' \\"
        );
        println!(
            "    -H 'authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{}/sqs/aws4_request, SignedHeaders=host, Signature=local' \\",
            clients.region
        );
        println!("    -d '{{\"QueueUrl\":\"{queue}\",\"MaxNumberOfMessages\":10}}'");
    }
    if let Some(twilio) = &stack.twilio {
        println!();
        println!("SMS routed to Twilio (SmsRoutes) go to the local Twilio; what it received:");
        println!();
        println!(
            "  curl -s -u '{}:{}' {}/2010-04-01/Accounts/{}/Messages.json",
            twilio.account().sid,
            twilio.account().auth_token,
            twilio.url,
            twilio.account().sid
        );
    }
    println!();
    println!("Admin and on-call: cargo run -q -p notifyctl -- --help   (reads {})", args.outputs_file.display());
    println!();
    println!("Ctrl-C stops everything.");

    stop_requested().await?;
    eprintln!("local-stack: stopping");
    stack.stop().await;
    if let Some((mut child, _)) = emulator {
        let _ = child.kill().await;
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM from whatever supervises the process (`kill`, `timeout`, a container
/// runtime): either way the emulator is stopped with the stack instead of being left running.
async fn stop_requested() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}

fn start_moto(binary: &PathBuf, port: u16) -> Result<Child, StackError> {
    if !binary.exists() {
        return Err(StackError::Template(format!(
            "{} does not exist: run scripts/setup.sh (scripts/up.sh does) to install the pinned emulator",
            binary.display()
        )));
    }
    let log_path = std::env::temp_dir().join(format!("notify-moto-{port}.log"));
    let log = std::fs::File::create(&log_path)?;
    eprintln!("local-stack: starting moto on 127.0.0.1:{port} (log: {})", log_path.display());
    Ok(Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?)
}

async fn wait_for_emulator(clients: &Clients, child: &mut Child) -> Result<(), StackError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(StackError::Unreachable {
                endpoint: clients.endpoint.clone(),
                message: format!("moto_server exited ({status}); is the port already in use? See its log"),
            });
        }
        match clients.check_reachable().await {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
