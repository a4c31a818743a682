//! The baseline for the broker benchmark: the same client the host uses
//! (for Redis, its own XREADGROUP reader, and the redis crate for the rest),
//! consuming a topic or stream from its start with a fresh group and
//! committing / acking what it read, and doing nothing else with it.
//!
//!   bare-consumer URL COUNT     (kafka://, pulsar:// or redis:// as for --source)
//!
//! Prints `{"records": N, "seconds": S, "records_per_second": R}`.

use std::time::{Duration, Instant};

use clean_host_stream::source::config::BrokerUrl;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, count] = args.as_slice() else {
        eprintln!("usage: bare-consumer URL COUNT");
        std::process::exit(2);
    };
    let url = BrokerUrl::parse(url).unwrap_or_else(|e| panic!("{e}"));
    let count: u64 = count.parse().expect("COUNT is a number");
    let group = format!("bare-{}", std::process::id());
    let started = Instant::now();
    let read = match url.scheme.as_str() {
        "kafka" => kafka(&url, &group, count),
        "redis" => redis(&url, &group, count),
        "pulsar" => pulsar(&url, &group, count),
        other => panic!("unknown scheme {other}"),
    };
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({"records": read, "seconds": seconds, "records_per_second": (read as f64 / seconds).round()}));
}

fn kafka(url: &BrokerUrl, group: &str, count: u64) -> u64 {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::Message;
    let mut config = rdkafka::ClientConfig::new();
    // The host's consumer settings, so the comparison is of what each does with the messages.
    for (key, value) in clean_host_stream::source::kafka::CONSUMER_DEFAULTS.iter().chain(&clean_host_stream::source::kafka::CLIENT_DEFAULTS) {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", &url.hosts)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&url.path]).expect("subscribe");
    let mut read = 0;
    let mut bytes = 0usize;
    // Commits every 200 ms, as the host does.
    let mut committed = std::time::Instant::now();
    while read < count {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, <[u8]>::len);
                read += 1;
                if committed.elapsed() >= Duration::from_millis(200) {
                    consumer.commit_consumer_state(CommitMode::Async).expect("commit");
                    committed = std::time::Instant::now();
                }
            }
            Some(Err(e)) => eprintln!("{e}"),
            None => {}
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).expect("commit");
    eprintln!("{bytes} payload bytes");
    read
}

fn redis(url: &BrokerUrl, group: &str, count: u64) -> u64 {
    use clean_host_stream::source::redis::reader::StreamReader;
    use redis::Commands;
    let client = redis::Client::open(format!("redis://{}/", url.hosts)).expect("client");
    let mut con = client.get_connection().expect("connect");
    let _: () = con.xgroup_create_mkstream(&url.path, group, "0").expect("group");
    let mut reader = StreamReader::connect(&url.hosts, url.login.as_ref(), None, Duration::from_secs(5), Duration::from_secs(10)).expect("connect");
    let mut read = 0;
    while read < count {
        let reply = reader.read(group, "bare", 1000, Some(Duration::from_millis(200)), &url.path, ">").expect("XREADGROUP");
        let ids: Vec<&str> = reply.entries.iter().map(|e| &*e.id).collect();
        if !ids.is_empty() {
            let _: i64 = con.xack(&url.path, group, &ids).expect("XACK");
        }
        read += ids.len() as u64;
    }
    read
}

fn pulsar(url: &BrokerUrl, group: &str, count: u64) -> u64 {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = pulsar::Pulsar::builder(format!("pulsar://{}", url.hosts), pulsar::TokioExecutor).build().await.expect("connect");
        let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
            .consumer()
            .with_topic(format!("persistent://{}", url.path))
            .with_subscription(group)
            .with_subscription_type(pulsar::SubType::Failover)
            .with_options(pulsar::ConsumerOptions::default().with_initial_position(pulsar::consumer::InitialPosition::Earliest))
            .build()
            .await
            .expect("subscribe");
        let mut read = 0;
        while read < count {
            let msg = consumer.next().await.expect("stream open").expect("message");
            consumer.ack(&msg).await.expect("ack");
            read += 1;
        }
        consumer.close().await.expect("close");
        read
    })
}
