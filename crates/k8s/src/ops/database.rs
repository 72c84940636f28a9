//! Where `down` reads the farm's results from: the database the analyzers
//! write to. For the in-cluster PostgreSQL that is a port-forward to its pod
//! with the credentials of Secret `posture-db`; for an existing database,
//! the `DATABASE_URL` that Secret holds. The choice is pure
//! ([`route`]); [`access`] carries it out.

use std::collections::BTreeMap;

use super::OpsError;
use super::forward::Forward;
use super::manifests::InClusterDb;
use super::manifests::generate::{DB_PORT, DB_SECRET, DB_SERVICE, keys};
use super::up::read_secret;
use kube::Client;

/// How to reach the results database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbRoute {
    /// The in-cluster PostgreSQL, through a port-forward, as this user.
    InCluster(InClusterDb),
    /// An existing database at this URL (reachable from here or not).
    Url(String),
}

/// The route Secret `posture-db`'s data gives, if any.
pub fn route(secret: Option<&BTreeMap<String, String>>) -> Option<DbRoute> {
    let data = secret?;
    if let Some(db) = InClusterDb::from_secret(data) {
        return Some(DbRoute::InCluster(db));
    }
    data.get(keys::DATABASE_URL)
        .filter(|u| !u.is_empty())
        .map(|u| DbRoute::Url(u.clone()))
}

/// An open way to the results database; the port-forward (if any) closes
/// when this is dropped.
pub struct DbAccess {
    /// The URL to connect with from this machine.
    pub url: String,
    /// What it is, for messages (never the password).
    pub describe: String,
    _forward: Option<Forward>,
}

/// Opens the way to the farm's database in `namespace`, or `None` when no
/// Secret `posture-db` says where it is.
pub async fn access(client: &Client, namespace: &str) -> Result<Option<DbAccess>, OpsError> {
    let secret = read_secret(client, namespace, DB_SECRET).await?;
    Ok(match route(secret.as_ref()) {
        None => None,
        Some(DbRoute::Url(url)) => Some(DbAccess {
            url,
            describe: format!("the database of Secret {namespace}/{DB_SECRET}"),
            _forward: None,
        }),
        Some(DbRoute::InCluster(db)) => {
            let selector = format!("app.kubernetes.io/name={DB_SERVICE}");
            let forward = Forward::to_pod(client, namespace, &selector, DB_PORT).await?;
            Some(DbAccess {
                url: db.url_at("127.0.0.1", forward.addr.port()),
                describe: format!(
                    "PostgreSQL {namespace}/{DB_SERVICE} (port-forward to {})",
                    forward.addr
                ),
                _forward: Some(forward),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_decides_the_route() {
        assert_eq!(route(None), None);
        let generated = BTreeMap::from([
            ("POSTGRES_PASSWORD".to_string(), "pw".to_string()),
            (
                "DATABASE_URL".to_string(),
                "postgres://posture:pw@posture-db:5432/posture".to_string(),
            ),
        ]);
        assert_eq!(
            route(Some(&generated)),
            Some(DbRoute::InCluster(InClusterDb::new("pw".into())))
        );
        let existing = BTreeMap::from([(
            "DATABASE_URL".to_string(),
            "postgres://db.lan/p".to_string(),
        )]);
        assert_eq!(
            route(Some(&existing)),
            Some(DbRoute::Url("postgres://db.lan/p".into()))
        );
        assert_eq!(route(Some(&BTreeMap::new())), None);
    }
}
