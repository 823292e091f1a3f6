//! The raw-client baseline for `scripts/bench`, straight on the SDK (no filesystem):
//!   raw_client ENDPOINT BUCKET get KEY [PART_MIB] [CONCURRENCY]  -> MiB/s of parallel ranged GETs
//!   raw_client ENDPOINT BUCKET rand KEY THREADS SECONDS          -> IOPS of random 4 KiB GETs
//!   raw_client ENDPOINT BUCKET list PREFIX                       -> seconds to list (delimited)
//!   raw_client ENDPOINT BUCKET put KEY SIZE_MIB                  -> seconds for a multipart upload
//!   raw_client ENDPOINT BUCKET count PREFIX                      -> keys and bytes under PREFIX
//!   raw_client ENDPOINT BUCKET put-many PREFIX COUNT SIZE        -> COUNT small objects (setup)
//!   raw_client ENDPOINT BUCKET put-seq PREFIX COUNT SIZE         -> objects/s, one PUT at a time
//! Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;

fn client(endpoint: &str) -> Client {
    let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .credentials_provider(Credentials::new(key, secret, None, None, "bench"))
        .build();
    Client::from_conf(conf)
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, bucket, cmd) = (&args[1], args[2].clone(), args[3].as_str());
    let c = client(endpoint);
    match cmd {
        "get" => {
            let key = args[4].clone();
            let part: u64 = args.get(5).map_or(8, |s| s.parse().unwrap()) << 20;
            let conc: usize = args.get(6).map_or(16, |s| s.parse().unwrap());
            let size = c
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .content_length()
                .unwrap() as u64;
            let t = Instant::now();
            let total: u64 = futures::stream::iter((0..size).step_by(part as usize))
                .map(|off| {
                    let (c, bucket, key) = (c.clone(), bucket.clone(), key.clone());
                    async move {
                        let end = (off + part).min(size) - 1;
                        let mut body = c
                            .get_object()
                            .bucket(bucket)
                            .key(key)
                            .range(format!("bytes={off}-{end}"))
                            .send()
                            .await
                            .unwrap()
                            .body;
                        let mut n = 0u64;
                        while let Some(chunk) = body.next().await {
                            n += chunk.unwrap().len() as u64;
                        }
                        n
                    }
                })
                .buffer_unordered(conc)
                .fold(0u64, |a, n| async move { a + n })
                .await;
            assert_eq!(total, size);
            println!(
                "{:.1}",
                size as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
            );
        }
        "rand" => {
            let key = args[4].clone();
            let threads: u64 = args[5].parse().unwrap();
            let secs: f64 = args[6].parse().unwrap();
            let size = c
                .head_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .content_length()
                .unwrap() as u64;
            let t = Instant::now();
            let workers = (0..threads).map(|w| {
                let (c, bucket, key) = (c.clone(), bucket.clone(), key.clone());
                tokio::spawn(async move {
                    let (mut x, mut n) = (w * 7919 + 1, 0u64);
                    while t.elapsed().as_secs_f64() < secs {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let off = (x >> 20) % (size / 4096) * 4096;
                        let out = c
                            .get_object()
                            .bucket(&bucket)
                            .key(&key)
                            .range(format!("bytes={off}-{}", off + 4095))
                            .send()
                            .await
                            .unwrap();
                        out.body.collect().await.unwrap();
                        n += 1;
                    }
                    n
                })
            });
            let total: u64 = futures::future::join_all(workers)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .sum();
            println!("{}", (total as f64 / t.elapsed().as_secs_f64()).round());
        }
        "lat" => {
            // Mean latency of sequential 4 KiB ranged GETs.
            let key = args[4].clone();
            let n = 50;
            let t = Instant::now();
            for i in 0..n {
                let off = i * 1_000_003;
                let out = c
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .range(format!("bytes={off}-{}", off + 4095))
                    .send()
                    .await
                    .unwrap();
                out.body.collect().await.unwrap();
            }
            println!("{:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
        }
        "list" => {
            let prefix = args[4].clone();
            let t = Instant::now();
            let mut token = None;
            let mut n = 0;
            loop {
                let out = c
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .delimiter("/")
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                n += out.contents().len() + out.common_prefixes().len();
                token = out.next_continuation_token().map(str::to_string);
                if !out.is_truncated().unwrap_or(false) {
                    break;
                }
            }
            eprintln!("listed {n} entries");
            println!("{:.3}", t.elapsed().as_secs_f64());
        }
        "count" => {
            let prefix = args[4].clone();
            let (mut n, mut bytes, mut token) = (0u64, 0i64, None);
            loop {
                let out = c
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                n += out.contents().len() as u64;
                bytes += out
                    .contents()
                    .iter()
                    .map(|o| o.size().unwrap_or(0))
                    .sum::<i64>();
                token = out.next_continuation_token().map(str::to_string);
                if !out.is_truncated().unwrap_or(false) {
                    break;
                }
            }
            println!("{n} {bytes}");
        }
        "put" => {
            let t = Instant::now();
            let key = args[4].clone();
            let mib: usize = args[5].parse().unwrap();
            let part = 8usize << 20;
            let up = c
                .create_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let id = up.upload_id().unwrap().to_string();
            let parts: Vec<_> = futures::stream::iter(0..mib.div_ceil(8))
                .map(|i| {
                    let (c, bucket, key, id) = (c.clone(), bucket.clone(), key.clone(), id.clone());
                    async move {
                        let len = part.min((mib << 20) - i * part);
                        let body = pseudo_random(len, i as u64 + 1);
                        let out = c
                            .upload_part()
                            .bucket(bucket)
                            .key(key)
                            .upload_id(id)
                            .part_number(i as i32 + 1)
                            .body(ByteStream::from(body))
                            .send()
                            .await
                            .unwrap();
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(i as i32 + 1)
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .build()
                    }
                })
                .buffered(4)
                .collect()
                .await;
            c.complete_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(id)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .unwrap();
            println!("{:.3}", t.elapsed().as_secs_f64());
        }
        "put-seq" => {
            // One PUT after another, as a sequential `cp` must (each durable before the next).
            let prefix = args[4].clone();
            let count: usize = args[5].parse().unwrap();
            let size: usize = args[6].parse().unwrap();
            let t = Instant::now();
            for i in 0..count {
                let body = ByteStream::from(pseudo_random(size, i as u64 + 3));
                c.put_object()
                    .bucket(&bucket)
                    .key(format!("{prefix}s{i:05}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
            }
            println!("{:.0}", count as f64 / t.elapsed().as_secs_f64());
        }
        "put-many" => {
            let prefix = args[4].clone();
            let count: usize = args[5].parse().unwrap();
            let size: usize = args[6].parse().unwrap();
            futures::stream::iter(0..count)
                .map(|i| {
                    let (c, bucket, key) = (c.clone(), bucket.clone(), format!("{prefix}f{i:05}"));
                    async move {
                        c.put_object()
                            .bucket(bucket)
                            .key(key)
                            .body(ByteStream::from(pseudo_random(size, i as u64 + 7)))
                            .send()
                            .await
                            .unwrap();
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await;
        }
        other => panic!("unknown command {other}"),
    }
}
