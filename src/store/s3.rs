//! The aws-sdk-s3 implementation of [`ObjectStore`], configured for any S3-compatible endpoint.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::config::{IdentityCache, ProvideCredentials};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use parking_lot::RwLock;

use super::{BodyStream, ListPage, ObjectInfo, ObjectStore, PutOptions, StoreError};

/// How to reach the bucket. `Debug` never shows the secret (the SDK's `Credentials` redacts it).
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: Option<Credentials>,
    pub path_style: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_attempts: u32,
    /// Bound on one operation, retries included: a store that stays down fails it in time.
    pub op_timeout: Duration,
    /// Send a CRC32C of every upload for the store to verify (`--checksums`).
    pub checksums: bool,
}

/// Credentials that can be swapped while mounted (SIGHUP re-reads the credential source).
#[derive(Debug, Clone, Default)]
pub struct Keyring(Arc<RwLock<Option<Credentials>>>);

impl ProvideCredentials for Keyring {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let creds = self.0.read().clone();
        aws_credential_types::provider::future::ProvideCredentials::ready(creds.ok_or_else(|| {
            aws_credential_types::provider::error::CredentialsError::not_loaded("no credentials")
        }))
    }
}

pub struct S3Store {
    client: Client,
    bucket: String,
    keyring: Keyring,
    /// Listed keys that cannot be named (not UTF-8), each logged once.
    unshowable: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// With `checksums`: each uploaded part's CRC32C by upload id and part number, which
    /// CompleteMultipartUpload must list again.
    part_sums: Option<parking_lot::Mutex<HashMap<String, HashMap<i32, String>>>>,
}

impl S3Store {
    pub fn new(settings: &S3Settings) -> Self {
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .force_path_style(settings.path_style)
            // Many S3-compatible stores reject the newer default (trailing) checksums; with
            // `checksums` the CRC32C goes in a plain header, which more stores understand.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(if settings.checksums {
                ResponseChecksumValidation::WhenSupported
            } else {
                ResponseChecksumValidation::WhenRequired
            })
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .read_timeout(settings.read_timeout)
                    .operation_timeout(settings.op_timeout)
                    .build(),
            )
            // Exponential backoff with jitter on throttling, 5xx and dropped connections.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(5)),
            );
        if let Some(ep) = &settings.endpoint {
            b = b.endpoint_url(ep);
        }
        // Without a credentials provider the SDK falls back to unsigned requests.
        let keyring = Keyring::default();
        if let Some(c) = &settings.credentials {
            *keyring.0.write() = Some(c.clone());
            // Asked per request (a lock and a clone), so a reload takes effect at once.
            b = b
                .credentials_provider(keyring.clone())
                .identity_cache(IdentityCache::no_cache());
        }
        S3Store {
            client: Client::from_conf(b.build()),
            bucket: settings.bucket.clone(),
            keyring,
            unshowable: Default::default(),
            part_sums: settings.checksums.then(Default::default),
        }
    }

    /// The CRC32C of `body`, base64 as the `x-amz-checksum-crc32c` header carries it, when
    /// checksums are on.
    fn crc32c(&self, body: &[u8]) -> Option<String> {
        self.part_sums.as_ref()?;
        let mut sum = aws_smithy_checksums::ChecksumAlgorithm::Crc32c.into_impl();
        sum.update(body);
        sum.header_value().to_str().ok().map(str::to_string)
    }

    fn checksum_algorithm(&self) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
        self.part_sums
            .as_ref()
            .map(|_| aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
    }

    fn remember_part_sum(&self, upload_id: &str, part: i32, sum: Option<&str>) {
        if let (Some(sums), Some(sum)) = (&self.part_sums, sum) {
            sums.lock()
                .entry(upload_id.to_string())
                .or_default()
                .insert(part, sum.to_string());
        }
    }

    fn forget_part_sums(&self, upload_id: &str) {
        if let Some(sums) = &self.part_sums {
            sums.lock().remove(upload_id);
        }
    }

    /// Switches to new credentials (a rotated key) without remounting. A mount that started
    /// anonymous stays anonymous.
    pub fn set_credentials(&self, creds: Credentials) -> bool {
        let mut k = self.keyring.0.write();
        if k.is_none() {
            return false;
        }
        *k = Some(creds);
        true
    }

    /// The mount-time check: one listing, tried twice at most, so a wrong endpoint fails fast.
    pub async fn check(&self, prefix: &str) -> Result<(), StoreError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .max_keys(1)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .retry_config(RetryConfig::standard().with_max_attempts(2)),
            )
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err<E>(&self, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        map_sdk_error(&self.bucket, e)
    }
}

/// Every message from the error and its sources, without repeats.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "invalidcontenttype",
        "corrupt message",
    ]
    .iter()
    .any(|w| t.contains(w))
}

pub fn map_sdk_error<E>(
    bucket: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("");
            let msg = ctx.err().message().unwrap_or("");
            let detail = if code.is_empty() {
                format!("HTTP {status}")
            } else if msg.is_empty() {
                format!("{code}, HTTP {status}")
            } else {
                format!("{code}: {msg}")
            };
            match (code, status) {
                ("NoSuchBucket", _) => StoreError::NoSuchBucket(bucket.to_string()),
                ("NoSuchKey" | "NoSuchUpload" | "NotFound", _) | ("", 404) => StoreError::NotFound,
                ("PreconditionFailed", _) | (_, 412) => StoreError::PreconditionFailed,
                (
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"
                    | "InvalidClientTokenId"
                    | "AuthorizationHeaderMalformed"
                    | "NotSignedUp",
                    _,
                ) => StoreError::InvalidCredentials(detail),
                ("AccessDenied", _) | ("", 403) | (_, 403) => StoreError::AccessDenied(detail),
                _ => StoreError::Other(detail),
            }
        }
        SdkError::TimeoutError(_) => StoreError::Timeout(chain(&e)),
        SdkError::DispatchFailure(d) => {
            let text = chain(&e);
            if d.is_timeout() {
                StoreError::Timeout(text)
            } else if looks_like_tls(&text) {
                StoreError::Tls(text)
            } else {
                StoreError::Unreachable(text)
            }
        }
        SdkError::ResponseError(_) => {
            let text = chain(&e);
            if looks_like_tls(&text) {
                StoreError::Tls(text)
            } else {
                StoreError::Other(format!("unexpected response: {text}"))
            }
        }
        _ => StoreError::Other(chain(&e)),
    }
}

/// A key as listed: URL-decoded when the store encoded it. `None` for a key that is not UTF-8
/// once decoded: the SDK addresses objects by string keys, so such an object cannot be read.
fn decode_key(listed: &str, encoded: bool) -> Option<String> {
    if !encoded {
        return Some(listed.to_string());
    }
    String::from_utf8(super::percent::percent_decode(listed)?).ok()
}

/// `x-amz-copy-source`: the bucket and the URL-encoded key.
fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", super::percent::percent_encode(key, true))
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl ObjectStore for S3Store {
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
            last_modified: to_system_time(out.last_modified()),
            content_type: out.content_type().map(str::to_string),
            user_meta: Some(out.metadata().cloned().unwrap_or_default()),
        })
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<BodyStream, StoreError> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(etag.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let stream = futures::stream::unfold(out.body, |mut body: ByteStream| async move {
            body.next().await.map(|chunk| {
                let chunk =
                    chunk.map_err(|e| StoreError::Other(format!("reading body: {}", chain(&e))));
                (chunk, body)
            })
        });
        Ok(Box::pin(stream))
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        // URL-encoded keys: XML cannot carry every character a key may hold (control
        // characters), and one such key must not make a whole listing unreadable.
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .set_delimiter(delimited.then(|| "/".to_string()))
            .set_continuation_token(token)
            .set_max_keys(max_keys)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        // Stores that ignore the parameter say so by leaving EncodingType out: then keys are raw.
        let encoded = out.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url);
        let decode = |k: &str| -> Option<String> {
            let key = decode_key(k, encoded);
            if key.is_none() && self.unshowable.lock().insert(k.to_string()) {
                tracing::warn!(key = k, "key is not UTF-8 once decoded; not shown");
            }
            key
        };
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: decode(o.key()?)?,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    last_modified: to_system_time(o.last_modified()),
                    content_type: None,
                    user_meta: None,
                })
            })
            .collect();
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| decode(p.prefix()?))
            .collect();
        let next_token = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next_token,
        })
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<String, StoreError> {
        let sum = self.crc32c(&body);
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_content_type(opts.content_type)
            .set_metadata(Some(opts.user_meta))
            .set_checksum_crc32_c(sum)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn copy(
        &self,
        src: &str,
        dst: &str,
        meta: Option<PutOptions>,
    ) -> Result<String, StoreError> {
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(copy_source(&self.bucket, src));
        if let Some(opts) = meta {
            req = req
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .set_content_type(opts.content_type)
                .set_metadata(Some(opts.user_meta));
        }
        let out = req.send().await.map_err(|e| self.err(e))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string())
    }

    async fn create_multipart(&self, key: &str, opts: PutOptions) -> Result<String, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_checksum_algorithm(self.checksum_algorithm())
            .set_content_type(opts.content_type)
            .set_metadata(Some(opts.user_meta))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let id = out.upload_id().ok_or_else(|| {
            StoreError::Other("CreateMultipartUpload returned no upload id".into())
        })?;
        Ok(id.to_string())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let sum = self.crc32c(&body);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part)
            .set_checksum_crc32_c(sum.clone())
            .body(ByteStream::from(body))
            .customize()
            // UNSIGNED-PAYLOAD: hashing every byte for the signature costs more CPU than the
            // upload itself (S3 and the common compatible stores accept it).
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.err(e))?;
        self.remember_part_sum(upload_id, part, sum.as_deref());
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        src: &str,
        src_etag: &str,
        range: Range<u64>,
    ) -> Result<String, StoreError> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part)
            .copy_source(copy_source(&self.bucket, src))
            .copy_source_if_match(src_etag)
            .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let result = out.copy_part_result();
        self.remember_part_sum(upload_id, part, result.and_then(|r| r.checksum_crc32_c()));
        Ok(result
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string())
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<String, StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        // Kept until the upload ends: a failed completion may be tried again.
        let sums = self
            .part_sums
            .as_ref()
            .and_then(|s| s.lock().get(upload_id).cloned())
            .unwrap_or_default();
        let part_etags: Vec<String> = parts.iter().map(|(_, e)| e.clone()).collect();
        let parts = parts
            .into_iter()
            .map(|(n, etag)| {
                let sum = sums.get(&n).cloned();
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(etag)
                    .set_checksum_crc32_c(sum)
                    .build()
            })
            .collect();
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        let etag = match result {
            Ok(out) => out.e_tag().unwrap_or_default().to_string(),
            // Some S3-compatible stores answer 200 with a body the SDK cannot parse (another root
            // element); the upload is complete then. A real error in a 200 carries a code.
            Err(SdkError::ServiceError(ctx))
                if ctx.raw().status().as_u16() == 200 && ctx.err().code().is_none() =>
            {
                // Trusted only if the object there now is the one this upload made: another
                // writer's object, or the old one, must not pass for a completed upload.
                let now = self.head(key).await?.etag;
                if !is_completion_of(&now, &part_etags) {
                    return Err(StoreError::Other(format!(
                        "CompleteMultipartUpload answered 200 without a result, and {key} is not the completed upload (ETag {now})"
                    )));
                }
                now
            }
            Err(e) => return Err(self.err(e)),
        };
        self.forget_part_sums(upload_id);
        Ok(etag)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err(e));
        self.forget_part_sums(upload_id);
        result
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Whether `etag` is that of an object completed from parts with `part_etags`. Where parts
/// have MD5 ETags (AWS and most stores), a multipart object's ETag is the MD5 of their binary
/// MD5s followed by `-N`; elsewhere only the part count can be checked.
pub fn is_completion_of(etag: &str, part_etags: &[String]) -> bool {
    use md5::{Digest, Md5};
    let etag = etag.trim_matches('"');
    let count = format!("-{}", part_etags.len());
    let md5s: Option<Vec<u8>> = part_etags
        .iter()
        .map(|e| {
            let e = e.trim_matches('"');
            (e.len() == 32)
                .then(|| {
                    (0..32)
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&e[i..i + 2], 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten()
        })
        .collect::<Option<Vec<Vec<u8>>>>()
        .map(|v| v.concat());
    match md5s {
        Some(bytes) => {
            let want: String = Md5::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            etag.eq_ignore_ascii_case(&format!("{want}{count}"))
        }
        None => etag.ends_with(&count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_upload_is_recognised_by_its_etag() {
        use md5::{Digest, Md5};
        let hex = |b: &[u8]| -> String { b.iter().map(|x| format!("{x:02x}")).collect() };
        let (a, b) = (Md5::digest(b"part one"), Md5::digest(b"part two"));
        let parts = vec![format!("\"{}\"", hex(&a)), hex(&b)];
        let whole = hex(&Md5::digest([a.as_slice(), b.as_slice()].concat()));
        assert!(is_completion_of(&format!("\"{whole}-2\""), &parts));
        assert!(!is_completion_of(&format!("{whole}-3"), &parts));
        assert!(!is_completion_of(
            "0123456789abcdef0123456789abcdef-2",
            &parts
        ));
        assert!(!is_completion_of(&hex(&a), &parts), "a plain PUT is not it");
        // Stores whose part ETags are not MD5s: the part count is all there is to check.
        let odd = vec!["p1".to_string(), "p2".to_string()];
        assert!(is_completion_of("whatever-2", &odd));
        assert!(!is_completion_of("whatever", &odd));
    }

    #[test]
    fn listed_keys_are_decoded_and_non_utf8_ones_refused() {
        assert_eq!(decode_key("a%2Bb%0Ac", true).as_deref(), Some("a+b\nc"));
        assert_eq!(decode_key("a%2Bb", false).as_deref(), Some("a%2Bb"));
        assert_eq!(decode_key("caf%C3%A9", true).as_deref(), Some("caf\u{e9}"));
        assert_eq!(decode_key("bad%FF%FE", true), None);
        assert_eq!(decode_key("half%C3", true), None);
    }

    #[test]
    fn tls_errors_are_recognised() {
        assert!(looks_like_tls(
            "io error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(looks_like_tls(
            "received corrupt message of type InvalidContentType"
        ));
        assert!(!looks_like_tls("Connection refused (os error 111)"));
    }
}
