//! Where credentials come from: a platform service key, an AWS profile, `AWS_*` variables, or
//! none (anonymous). Secrets never appear in `Debug` output or in errors.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Clone, PartialEq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// What a credential source says, besides the keys: some sources also name the bucket,
/// the region or the endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub keys: Option<Keys>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub path_style: Option<bool>,
    /// For messages: where the credentials came from ("service key /x", "profile prod", ...).
    pub source: String,
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub service_key: Option<PathBuf>,
    pub profile: Option<String>,
    pub anonymous: bool,
}

/// The SDK's form of a key pair.
pub fn sdk_credentials(k: &Keys) -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new(
        &k.access_key_id,
        &k.secret_access_key.0,
        k.session_token.as_ref().map(|t| t.0.clone()),
        None,
        "s3mount",
    )
}

/// A file others can read gets a warning: it holds a secret.
pub fn warn_if_exposed(path: &Path) {
    if let Ok(md) = fs::metadata(path) {
        if md.permissions().mode() & 0o044 != 0 {
            tracing::warn!(
                "{} is readable by group or others; it holds a secret (chmod 600 it)",
                path.display()
            );
        }
    }
}

fn read_secret_file(path: &Path, what: &str) -> Result<String, String> {
    warn_if_exposed(path);
    fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Parses a service key as a platform CLI prints it: possibly header lines, then one JSON
/// object, possibly wrapped in `{"credentials": {...}}`.
pub fn parse_service_key(text: &str) -> Result<Resolved, String> {
    let start = text
        .find('{')
        .ok_or("no JSON object found (expected {\"access_key_id\": ...})")?;
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    let mut v = match de.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(format!("not valid JSON: {e}")),
        None => return Err("no JSON object found".into()),
    };
    if let Some(inner) = v.get("credentials").filter(|c| c.is_object()) {
        v = inner.clone();
    }
    let field = |names: &[&str]| -> Option<String> {
        names.iter().find_map(|n| {
            v.get(*n)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
    };
    let need = |names: &[&str]| -> Result<String, String> {
        field(names).ok_or_else(|| format!("missing field \"{}\"", names[0]))
    };
    let access_key_id = need(&["access_key_id", "accessKeyId", "aws_access_key_id"])?;
    let secret = need(&[
        "secret_access_key",
        "secretAccessKey",
        "aws_secret_access_key",
    ])?;
    let endpoint = field(&["endpoint", "endpoint_url", "endpointUrl"])
        .or_else(|| field(&["host"]))
        .or_else(|| field(&["uri"]).and_then(|u| host_of_uri(&u)))
        .map(|e| {
            if e.contains("://") {
                e
            } else {
                format!("https://{e}")
            }
        })
        .filter(|e| !e.starts_with("s3://"));
    Ok(Resolved {
        keys: Some(Keys {
            access_key_id,
            secret_access_key: Secret(secret),
            session_token: field(&["session_token", "sessionToken"]).map(Secret),
        }),
        region: field(&["region"]),
        endpoint,
        bucket: field(&["bucket", "bucket_name", "bucketName"]),
        path_style: None,
        source: String::new(),
    })
}

/// The host of `s3://KEY:SECRET@host/bucket`; the userinfo (secrets) is dropped.
fn host_of_uri(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

/// A small INI reader for `~/.aws/credentials` and `~/.aws/config`, including indented
/// sub-settings (`s3 =` followed by `  addressing_style = path`, kept as `s3.addressing_style`).
pub fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section: Option<String> = None;
    let mut parent: Option<String> = None;
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = Some(line[1..line.len() - 1].trim().to_string());
            parent = None;
            continue;
        }
        let Some(sec) = &section else { continue };
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        let entry = out.entry(sec.clone()).or_default();
        if indented {
            if let Some(p) = &parent {
                entry.insert(format!("{p}.{k}"), v);
                continue;
            }
        }
        if v.is_empty() {
            parent = Some(k.clone());
        } else {
            parent = None;
        }
        entry.insert(k, v);
    }
    out
}

/// The environment, abstracted so tests need not touch the process's variables.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

fn aws_files(env: &dyn Env) -> (PathBuf, PathBuf) {
    let home = env.var("HOME").map(PathBuf::from).unwrap_or_default();
    let creds = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/credentials"));
    let config = env
        .var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/config"));
    (creds, config)
}

/// A profile from the shared files; `Ok(None)` when neither file names it.
pub fn load_profile(name: &str, env: &dyn Env) -> Result<Option<Resolved>, String> {
    let (creds_path, config_path) = aws_files(env);
    let creds = if creds_path.exists() {
        parse_ini(&read_secret_file(&creds_path, "credentials file")?)
    } else {
        HashMap::new()
    };
    let config = if config_path.exists() {
        parse_ini(
            &fs::read_to_string(&config_path)
                .map_err(|e| format!("cannot read config file {}: {e}", config_path.display()))?,
        )
    } else {
        HashMap::new()
    };
    let config_section = if name == "default" {
        config
            .get("default")
            .or_else(|| config.get("profile default"))
    } else {
        config.get(&format!("profile {name}"))
    };
    let creds_section = creds.get(name);
    if creds_section.is_none() && config_section.is_none() {
        return Ok(None);
    }
    let get = |k: &str| {
        creds_section
            .and_then(|s| s.get(k))
            .or_else(|| config_section.and_then(|s| s.get(k)))
            .cloned()
            .filter(|v| !v.is_empty())
    };
    let keys = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Some(Keys {
            access_key_id: id,
            secret_access_key: Secret(secret),
            session_token: get("aws_session_token").map(Secret),
        }),
        (None, None) => None,
        _ => {
            return Err(format!(
                "profile {name:?} has only one of aws_access_key_id and aws_secret_access_key"
            ));
        }
    };
    if keys.is_none()
        && get("credential_process")
            .or(get("sso_session"))
            .or(get("role_arn"))
            .is_some()
    {
        return Err(format!(
            "profile {name:?} uses SSO, a role or a credential process, which s3mount does not \
             support yet; export keys with `aws configure export-credentials` instead"
        ));
    }
    Ok(Some(Resolved {
        keys,
        region: get("region"),
        endpoint: get("s3.endpoint_url").or_else(|| get("endpoint_url")),
        bucket: None,
        path_style: get("s3.addressing_style").map(|s| s == "path"),
        source: format!("profile {name}"),
    }))
}

fn from_env(env: &dyn Env) -> Option<Keys> {
    Some(Keys {
        access_key_id: env.var("AWS_ACCESS_KEY_ID")?,
        secret_access_key: Secret(env.var("AWS_SECRET_ACCESS_KEY")?),
        session_token: env.var("AWS_SESSION_TOKEN").map(Secret),
    })
}

/// Picks the credential source: a service key, an explicit profile (flag or `AWS_PROFILE`),
/// `AWS_*` variables, the default profile, and else anonymous access.
pub fn resolve(req: &Request, env: &dyn Env) -> Result<Resolved, String> {
    let env_region = || {
        env.var("AWS_REGION")
            .or_else(|| env.var("AWS_DEFAULT_REGION"))
    };
    let env_endpoint = || {
        env.var("AWS_ENDPOINT_URL_S3")
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
    };
    if let Some(path) = &req.service_key {
        let text = read_secret_file(path, "service key")?;
        let mut r =
            parse_service_key(&text).map_err(|e| format!("service key {}: {e}", path.display()))?;
        r.source = format!("service key {}", path.display());
        r.region = r.region.or_else(env_region);
        return Ok(r);
    }
    if req.anonymous {
        return Ok(Resolved {
            region: env_region(),
            endpoint: env_endpoint(),
            source: "anonymous (--no-sign-request)".into(),
            ..Default::default()
        });
    }
    let explicit = req.profile.clone().or_else(|| env.var("AWS_PROFILE"));
    if let Some(name) = explicit {
        let mut r = load_profile(&name, env)?.ok_or_else(|| {
            let (c, f) = aws_files(env);
            format!(
                "profile {name:?} not found in {} or {}",
                c.display(),
                f.display()
            )
        })?;
        r.region = env_region().or(r.region);
        r.endpoint = env_endpoint().or(r.endpoint);
        return Ok(r);
    }
    let default = load_profile("default", env)?;
    if let Some(keys) = from_env(env) {
        return Ok(Resolved {
            keys: Some(keys),
            region: env_region().or(default.as_ref().and_then(|d| d.region.clone())),
            endpoint: env_endpoint().or(default.as_ref().and_then(|d| d.endpoint.clone())),
            path_style: default.as_ref().and_then(|d| d.path_style),
            bucket: None,
            source: "AWS_ACCESS_KEY_ID environment".into(),
        });
    }
    if let Some(mut d) = default {
        if d.keys.is_some() {
            d.region = env_region().or(d.region);
            d.endpoint = env_endpoint().or(d.endpoint);
            return Ok(d);
        }
    }
    Ok(Resolved {
        region: env_region(),
        endpoint: env_endpoint(),
        source: "anonymous (no credentials found)".into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(HashMap<String, String>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }
    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn service_key_with_cli_header_line() {
        let text = "Getting key mykey for service instance store as admin...\n\n{\n \"access_key_id\": \"AKIA1\",\n \"secret_access_key\": \"s3cr3t\",\n \"region\": \"eu-central-1\",\n \"bucket\": \"hcp-abc\",\n \"host\": \"s3.eu-central-1.amazonaws.com\",\n \"uri\": \"s3://AKIA1:s3cr3t@s3.eu-central-1.amazonaws.com/hcp-abc\"\n}\n";
        let r = parse_service_key(text).unwrap();
        assert_eq!(r.bucket.as_deref(), Some("hcp-abc"));
        assert_eq!(r.region.as_deref(), Some("eu-central-1"));
        assert_eq!(
            r.endpoint.as_deref(),
            Some("https://s3.eu-central-1.amazonaws.com")
        );
        let keys = r.keys.clone().unwrap();
        assert_eq!(keys.access_key_id, "AKIA1");
        assert_eq!(keys.secret_access_key.0, "s3cr3t");
        assert!(
            !format!("{r:?}").contains("s3cr3t"),
            "Debug must redact the secret"
        );
    }

    #[test]
    fn service_key_wrapped_in_credentials() {
        let text = "Getting key k...\n{\"credentials\": {\"access_key_id\": \"A\", \"secret_access_key\": \"S\", \"endpoint\": \"http://127.0.0.1:9000\"}}";
        let r = parse_service_key(text).unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(r.bucket, None);
    }

    #[test]
    fn service_key_missing_fields_are_named() {
        let e = parse_service_key("{\"access_key_id\": \"A\"}").unwrap_err();
        assert!(e.contains("secret_access_key"), "{e}");
        let e = parse_service_key("header only").unwrap_err();
        assert!(e.contains("JSON"), "{e}");
        let e = parse_service_key("x\n{\"access_key_id\": ").unwrap_err();
        assert!(e.contains("JSON"), "{e}");
    }

    #[test]
    fn uri_host_drops_userinfo() {
        assert_eq!(
            host_of_uri("s3://K:S@host.example/b").as_deref(),
            Some("host.example")
        );
    }

    #[test]
    fn profiles_from_temp_home() {
        let home = tempfile::tempdir().unwrap();
        let aws = home.path().join(".aws");
        fs::create_dir_all(&aws).unwrap();
        fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n[prod]\naws_access_key_id=PROD\naws_secret_access_key=prodsecret\naws_session_token=tok\n",
        )
        .unwrap();
        fs::write(
            aws.join("config"),
            "[default]\nregion = us-west-2\n[profile prod]\nregion = eu-west-1\nendpoint_url = https://objects.example.net\ns3 =\n  addressing_style = path\n",
        )
        .unwrap();
        let h = home.path().to_str().unwrap();
        let e = env(&[("HOME", h)]);
        let r = resolve(
            &Request {
                profile: Some("prod".into()),
                ..Default::default()
            },
            &e,
        )
        .unwrap();
        assert_eq!(r.keys.as_ref().unwrap().access_key_id, "PROD");
        assert_eq!(
            r.keys.as_ref().unwrap().session_token,
            Some(Secret("tok".into()))
        );
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert_eq!(r.endpoint.as_deref(), Some("https://objects.example.net"));
        assert_eq!(r.path_style, Some(true));

        let r = resolve(&Request::default(), &e).unwrap();
        assert_eq!(r.keys.unwrap().access_key_id, "DEF");
        assert_eq!(r.region.as_deref(), Some("us-west-2"));

        let e2 = env(&[("HOME", h), ("AWS_PROFILE", "prod")]);
        assert_eq!(
            resolve(&Request::default(), &e2).unwrap().source,
            "profile prod"
        );

        let e3 = env(&[
            ("HOME", h),
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]);
        assert_eq!(
            resolve(&Request::default(), &e3)
                .unwrap()
                .keys
                .unwrap()
                .access_key_id,
            "ENV"
        );

        let err = resolve(
            &Request {
                profile: Some("nope".into()),
                ..Default::default()
            },
            &e,
        )
        .unwrap_err();
        assert!(err.contains("\"nope\" not found"), "{err}");
    }

    #[test]
    fn nothing_configured_is_anonymous() {
        let home = tempfile::tempdir().unwrap();
        let e = env(&[("HOME", home.path().to_str().unwrap())]);
        let r = resolve(&Request::default(), &e).unwrap();
        assert!(r.keys.is_none());
        assert!(r.source.starts_with("anonymous"));
    }
}
