//! `clary-loadgen`: drives one HTTP endpoint on the loopback interface with N concurrent
//! kept-alive connections, each sending the same POST, for a bounded number of requests or
//! seconds. Prints one JSON line: requests, errors, req/s, p50/p90/p99 latency in ms.
//! `--sign ACCESS:SECRET:REGION` signs every request for SageMaker Runtime, as boto3 does.
//!
//! Usage: clary-loadgen URL BODY_FILE [--content-type T] [--accept T] [--concurrency N]
//!        [--requests N] [--seconds S] [--warmup N] [--sign AK:SK:REGION]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};

struct Options {
    url: http::Uri,
    body: Bytes,
    content_type: String,
    accept: Option<String>,
    concurrency: usize,
    requests: usize,
    seconds: f64,
    warmup: usize,
    signer: Option<clary_sigv4::Signer>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "clary-loadgen: {msg}\nusage: clary-loadgen URL BODY_FILE [--content-type T] [--accept T] [--concurrency N] [--requests N] [--seconds S] [--warmup N] [--sign AK:SK:REGION]"
    );
    std::process::exit(2)
}

fn parse() -> Options {
    let mut args = std::env::args().skip(1);
    let url: http::Uri = args
        .next()
        .unwrap_or_else(|| usage("no URL"))
        .parse()
        .unwrap_or_else(|_| usage("bad URL"));
    let host = url.host().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        usage("only loopback URLs are allowed");
    }
    let body_file = args.next().unwrap_or_else(|| usage("no body file"));
    let body = std::fs::read(&body_file).unwrap_or_else(|e| usage(&format!("{body_file}: {e}")));
    let mut o = Options {
        url,
        body: Bytes::from(body),
        content_type: "application/json".into(),
        accept: None,
        concurrency: 1,
        requests: 10_000,
        seconds: 10.0,
        warmup: 20,
        signer: None,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| {
            v.parse::<f64>()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--content-type" => o.content_type = value,
            "--accept" => o.accept = Some(value),
            "--concurrency" => o.concurrency = num(&value).max(1.0) as usize,
            "--requests" => o.requests = num(&value).max(1.0) as usize,
            "--seconds" => o.seconds = num(&value),
            "--warmup" => o.warmup = num(&value) as usize,
            "--sign" => {
                let parts: Vec<&str> = value.splitn(3, ':').collect();
                if parts.len() != 3 {
                    usage("--sign wants ACCESS:SECRET:REGION");
                }
                o.signer = Some(clary_sigv4::Signer {
                    access_key: parts[0].into(),
                    secret_key: parts[1].into(),
                    region: parts[2].into(),
                });
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    o
}

fn request(o: &Options) -> http::Request<Full<Bytes>> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        o.content_type.parse().expect("content type"),
    );
    if let Some(a) = &o.accept {
        headers.insert(http::header::ACCEPT, a.parse().expect("accept"));
    }
    if let Some(s) = &o.signer {
        s.sign(
            "sagemaker",
            &http::Method::POST,
            &o.url,
            &mut headers,
            &o.body,
            chrono::Utc::now(),
        )
        .expect("signing");
    }
    let mut req = http::Request::post(o.url.path())
        .body(Full::new(o.body.clone()))
        .expect("request");
    req.headers_mut().insert(
        http::header::HOST,
        o.url
            .authority()
            .expect("authority")
            .as_str()
            .parse()
            .expect("host"),
    );
    req.headers_mut().extend(headers);
    req
}

async fn worker(
    o: &Options,
    deadline: Instant,
    budget: &std::sync::atomic::AtomicUsize,
    warmup: usize,
) -> (Vec<f64>, usize) {
    let authority = o.url.authority().expect("authority").to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    stream.set_nodelay(true).ok();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let (mut lat, mut errors) = (Vec::new(), 0);
    let mut n = 0;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let counted = n >= warmup;
        if counted && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            budget.store(0, std::sync::atomic::Ordering::Relaxed);
            break;
        }
        n += 1;
        let start = Instant::now();
        let ok = match sender.send_request(request(o)).await {
            Ok(resp) => {
                let good = resp.status().is_success();
                good && resp.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        };
        if counted {
            if ok {
                lat.push(start.elapsed().as_secs_f64() * 1e3);
            } else {
                errors += 1;
            }
        }
        if sender.ready().await.is_err() {
            break;
        }
    }
    (lat, errors)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o: &'static Options = Box::leak(Box::new(parse()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let budget: &'static std::sync::atomic::AtomicUsize =
            Box::leak(Box::new(std::sync::atomic::AtomicUsize::new(o.requests)));
        let warm_each = o.warmup / o.concurrency;
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(o.seconds);
        let tasks: Vec<_> = (0..o.concurrency)
            .map(|_| tokio::spawn(worker(o, deadline, budget, warm_each)))
            .collect();
        let (mut lat, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.expect("worker");
            lat.extend(l);
            errors += e;
        }
        let wall = start.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.partial_cmp(b).expect("latencies are numbers"));
        let out = serde_json::json!({
            "requests": lat.len(), "errors": errors, "seconds": wall,
            "rps": lat.len() as f64 / wall,
            "p50_ms": percentile(&lat, 0.5), "p90_ms": percentile(&lat, 0.9), "p99_ms": percentile(&lat, 0.99),
        });
        println!("{out}");
    });
}
