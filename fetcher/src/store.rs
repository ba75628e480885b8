//! One `object_store` client per remote repository, with credentials taken from the
//! environment the way OVMS and the clouds' own tools take them. Built before the
//! sandbox: credential files are read here, never later.

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use warden_shared::config::ObjectStorageConfig;
use warden_shared::remote::{Provider, RemoteUrl};

/// The environment a store is configured from (a map, so tests need not touch the
/// process's own).
pub type Env = BTreeMap<String, String>;

/// The process's environment variables that configure object storage.
pub fn process_env() -> Env {
    std::env::vars()
        .filter(|(k, _)| warden_shared::remote::is_cloud_env(k))
        .collect()
}

/// Where a store connects: the endpoint's scheme, host and port (no credential), for
/// `warden check`, logs and the sandbox's connect rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub port: u16,
}

/// The custom S3 endpoint (`S3_ENDPOINT`, as OVMS, or `AWS_ENDPOINT_URL`), if any.
fn s3_endpoint(env: &Env) -> Option<String> {
    env.get("S3_ENDPOINT")
        .or_else(|| env.get("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
        .or_else(|| env.get("AWS_ENDPOINT"))
        .map(|e| {
            if e.contains("://") {
                e.clone()
            } else {
                // OVMS's S3_ENDPOINT may be host:port; TLS unless told otherwise.
                format!("https://{e}")
            }
        })
}

/// `AZURE_STORAGE_CONNECTION_STRING` (`Key=Value;...`), as the Azure tools and OVMS
/// take it.
fn connection_string(env: &Env) -> Option<BTreeMap<String, String>> {
    let text = env.get("AZURE_STORAGE_CONNECTION_STRING")?;
    Some(
        text.split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// The Azure Blob endpoint for `account`.
fn azure_endpoint(env: &Env, account: &str) -> String {
    let cs = connection_string(env).unwrap_or_default();
    if let Some(e) = cs
        .get("BlobEndpoint")
        .or_else(|| env.get("AZURE_STORAGE_ENDPOINT"))
        .or_else(|| env.get("AZURE_ENDPOINT"))
    {
        return e.trim_end_matches('/').to_owned();
    }
    let protocol = cs
        .get("DefaultEndpointsProtocol")
        .map_or("https", String::as_str);
    let suffix = cs
        .get("EndpointSuffix")
        .map_or("core.windows.net", String::as_str);
    format!("{protocol}://{account}.blob.{suffix}")
}

fn azure_account(env: &Env) -> Option<String> {
    connection_string(env)
        .and_then(|cs| cs.get("AccountName").cloned())
        .or_else(|| env.get("AZURE_STORAGE_ACCOUNT_NAME").cloned())
        .or_else(|| env.get("AZURE_STORAGE_ACCOUNT").cloned())
}

/// Where `url` is served from, without credentials.
pub fn endpoint(url: &RemoteUrl, env: &Env) -> Endpoint {
    let text = match url.provider {
        Provider::S3 => s3_endpoint(env).unwrap_or_else(|| {
            let region = env
                .get("AWS_REGION")
                .or_else(|| env.get("AWS_DEFAULT_REGION"))
                .map_or("us-east-1", String::as_str);
            format!("https://s3.{region}.amazonaws.com")
        }),
        Provider::Gcs => env
            .get("GOOGLE_BASE_URL")
            .cloned()
            .or_else(|| gcs_base_url_of_credentials(env))
            .unwrap_or_else(|| "https://storage.googleapis.com".into()),
        Provider::Azure => azure_endpoint(env, azure_account(env).as_deref().unwrap_or("?")),
    };
    let port = port_of(&text);
    Endpoint { url: text, port }
}

/// The `gcs_base_url` a service-account file (`GOOGLE_SERVICE_ACCOUNT`) may set
/// (object_store honours it: an emulator or a private endpoint). Only that field is
/// read from the file here.
fn gcs_base_url_of_credentials(env: &Env) -> Option<String> {
    let path = env.get("GOOGLE_SERVICE_ACCOUNT")?;
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("gcs_base_url")?.as_str().map(str::to_owned)
}

/// The TCP port of an `http(s)://host[:port]/...` address.
fn port_of(url: &str) -> u16 {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    match host_port.rsplit_once(':') {
        Some((_, p)) if !host_port.ends_with(']') => p.parse().unwrap_or(443),
        _ if scheme.eq_ignore_ascii_case("http") => 80,
        _ => 443,
    }
}

fn client_options(config: &ObjectStorageConfig, endpoint: &Endpoint) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(config.timeout_secs))
        .with_connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
        .with_allow_http(endpoint.url.starts_with("http://"))
}

fn retry(config: &ObjectStorageConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: config.retries,
        retry_timeout: Duration::from_secs(config.timeout_secs),
    }
}

/// A client for `url`. Errors name what is missing, never a secret's value.
pub fn build(
    url: &RemoteUrl,
    env: &Env,
    config: &ObjectStorageConfig,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let ep = endpoint(url, env);
    let options = client_options(config, &ep);
    let store: Arc<dyn ObjectStore> = match url.provider {
        Provider::S3 => {
            let mut b = AmazonS3Builder::new();
            for (k, v) in env {
                if let Ok(key) = k.to_ascii_lowercase().parse() {
                    b = b.with_config(key, v);
                }
            }
            if let Some(e) = s3_endpoint(env) {
                // A custom endpoint (MinIO, Ceph, a test server) is addressed path-style.
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            if env.get("AWS_REGION").is_none() && env.get("AWS_DEFAULT_REGION").is_none() {
                b = b.with_region("us-east-1");
            }
            Arc::new(
                b.with_bucket_name(&url.bucket)
                    .with_client_options(options)
                    .with_retry(retry(config))
                    .build()?,
            )
        }
        Provider::Gcs => {
            let mut b = GoogleCloudStorageBuilder::new();
            for (k, v) in env {
                if let Ok(key) = k.to_ascii_lowercase().parse() {
                    b = b.with_config(key, v);
                }
            }
            if let Some(path) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
                b = b.with_application_credentials(path);
            }
            Arc::new(
                b.with_bucket_name(&url.bucket)
                    .with_client_options(options)
                    .with_retry(retry(config))
                    .build()?,
            )
        }
        Provider::Azure => {
            let mut b = MicrosoftAzureBuilder::new();
            for (k, v) in env {
                if let Ok(key) = k.to_ascii_lowercase().parse() {
                    b = b.with_config(key, v);
                }
            }
            let cs = connection_string(env).unwrap_or_default();
            let account = azure_account(env).ok_or_else(|| {
                anyhow::anyhow!(
                    "{url}: no Azure storage account (set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN)"
                )
            })?;
            b = b.with_account(&account).with_endpoint(ep.url.clone());
            if let Some(key) = cs.get("AccountKey") {
                b = b.with_access_key(key);
            }
            if let Some(sas) = cs.get("SharedAccessSignature") {
                b = b.with_config("azure_storage_sas_key".parse()?, sas);
            }
            Arc::new(
                b.with_container_name(&url.bucket)
                    .with_client_options(options)
                    .with_retry(retry(config))
                    .build()?,
            )
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn url(text: &str) -> RemoteUrl {
        RemoteUrl::of(Path::new(text)).unwrap().unwrap()
    }

    #[test]
    fn endpoints() {
        let s3 = url("s3://b/m");
        assert_eq!(
            endpoint(&s3, &env(&[("AWS_REGION", "eu-west-1")])),
            Endpoint {
                url: "https://s3.eu-west-1.amazonaws.com".into(),
                port: 443
            }
        );
        assert_eq!(
            endpoint(&s3, &env(&[("S3_ENDPOINT", "http://127.0.0.1:9000")])).port,
            9000
        );
        assert_eq!(
            endpoint(&s3, &env(&[("S3_ENDPOINT", "minio.local:9000")])).url,
            "https://minio.local:9000"
        );
        let az = url("az://c/m");
        let cs = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
        let e = endpoint(&az, &env(&[("AZURE_STORAGE_CONNECTION_STRING", cs)]));
        assert_eq!(e.url, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(e.port, 10000);
        let e = endpoint(
            &az,
            &env(&[(
                "AZURE_STORAGE_CONNECTION_STRING",
                "AccountName=acct;AccountKey=a2V5",
            )]),
        );
        assert_eq!(e.url, "https://acct.blob.core.windows.net");
        assert_eq!(
            endpoint(&url("gs://b/m"), &Env::new()).url,
            "https://storage.googleapis.com"
        );
    }

    #[test]
    fn clients_build_from_each_credential_form() {
        let c = ObjectStorageConfig::default();
        build(
            &url("s3://b/m"),
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_SESSION_TOKEN", "token"),
                ("S3_ENDPOINT", "http://127.0.0.1:9000"),
            ]),
            &c,
        )
        .unwrap();
        build(
            &url("az://c/m"),
            &env(&[(
                "AZURE_STORAGE_CONNECTION_STRING",
                "AccountName=acct;AccountKey=a2V5",
            )]),
            &c,
        )
        .unwrap();
        build(
            &url("azure://c/m"),
            &env(&[
                ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
                ("AZURE_STORAGE_SAS_TOKEN", "sv=2022-11-02&sig=abc"),
            ]),
            &c,
        )
        .unwrap();
        let err = build(&url("az://c/m"), &Env::new(), &c).err().unwrap();
        assert!(
            err.to_string().contains("no Azure storage account"),
            "{err}"
        );
        // A service-account file that does not exist is named, and nothing else.
        let err = build(
            &url("gs://b/m"),
            &env(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/sa.json")]),
            &c,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/sa.json")
                || format!("{err:#}").contains("No such file"),
            "{err:#}"
        );
    }
}
