//! The control API client used by CLI commands: JSON over HTTP on the daemon's unix
//! socket.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::endpoint::{Endpoint, TextStream};
use crate::ErrorBody;

/// How long a call may take. Writes wait for a quorum; a cluster that lost it answers
/// "no quorum" within seconds, so a minute is only reached by a stuck daemon.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a streamed answer (`logs --follow`) may stay open.
const STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Why a call failed, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the hoist daemon at unix://{socket}: {reason}. Is `hoist daemon` running, and is --host or HOIST_HOST right?")]
    Connect { socket: String, reason: String },
    /// The daemon refused the request; its message says why.
    #[error("{message}")]
    Api { status: u16, message: String },
    /// The daemon accepted the connection but did not answer within the client's own
    /// timeout.
    #[error("the hoist daemon at unix://{socket} did not answer within {after:?}: it may be stuck, or waiting for a cluster that lost its quorum")]
    Timeout { socket: String, after: Duration },
    #[error("unexpected response from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client bound to one daemon's socket.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    socket: PathBuf,
    /// How long a call may take before it fails with [`ClientError::Timeout`].
    timeout: Duration,
}

impl Client {
    pub fn unix(socket: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let socket = socket.into();
        let http = reqwest::Client::builder()
            .unix_socket(socket.clone())
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|err| ClientError::Protocol(err.to_string()))?;
        Ok(Client {
            http,
            socket,
            timeout: CALL_TIMEOUT,
        })
    }

    /// The same client with another bound on each call (streams keep theirs).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Calls endpoint `E` with its path parameters and body; the answer is `E`'s
    /// response type.
    pub async fn call<E>(
        &self,
        params: &E::Params,
        body: &E::Request,
    ) -> Result<E::Response, ClientError>
    where
        E: Endpoint<Query = crate::NoQuery>,
        E::Response: DeserializeOwned,
    {
        self.call_with::<E>(params, &crate::NoQuery {}, body).await
    }

    /// [`Client::call`] with a query string.
    pub async fn call_with<E>(
        &self,
        params: &E::Params,
        query: &E::Query,
        body: &E::Request,
    ) -> Result<E::Response, ClientError>
    where
        E: Endpoint,
        E::Response: DeserializeOwned,
    {
        let response = self.send::<E>(params, query, body, self.timeout).await?;
        response
            .json()
            .await
            .map_err(|err| ClientError::Protocol(err.to_string()))
    }

    /// Calls `E` and returns its answer as JSON without reading it into `E`'s type: for
    /// a caller that must keep members this build does not know (a backup written to a
    /// file as the daemon sent it).
    pub async fn call_json<E>(
        &self,
        params: &E::Params,
        body: &E::Request,
    ) -> Result<serde_json::Value, ClientError>
    where
        E: Endpoint<Query = crate::NoQuery>,
        E::Response: DeserializeOwned,
    {
        let response = self
            .send::<E>(params, &crate::NoQuery {}, body, self.timeout)
            .await?;
        response
            .json()
            .await
            .map_err(|err| ClientError::Protocol(err.to_string()))
    }

    /// Calls an endpoint whose answer is a text stream (logs, progress).
    pub async fn stream<E>(
        &self,
        params: &E::Params,
        query: &E::Query,
    ) -> Result<reqwest::Response, ClientError>
    where
        E: Endpoint<Response = TextStream, Request = ()>,
    {
        self.send::<E>(params, query, &(), STREAM_TIMEOUT).await
    }

    /// A GET of a path that is not the control API's, for another daemon's API on a unix
    /// socket (the benchmark reads Docker's engine this way).
    pub async fn get_foreign<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self
            .http
            .get(format!("http://hoist{path}"))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|err| self.send_error(err, self.timeout))?;
        let response = Self::check(response).await?;
        response
            .json()
            .await
            .map_err(|err| ClientError::Protocol(err.to_string()))
    }

    async fn send<E: Endpoint>(
        &self,
        params: &E::Params,
        query: &E::Query,
        body: &E::Request,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let path = E::path_and_query(params, query);
        let mut request = self
            .http
            .request(E::METHOD, format!("http://hoist{path}"))
            .timeout(timeout);
        // GET and DELETE carry no body; a POST without one sends `null`.
        if E::METHOD == Method::POST {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.send_error(err, timeout))?;
        Self::check(response).await
    }

    fn send_error(&self, err: reqwest::Error, after: Duration) -> ClientError {
        if err.is_timeout() {
            return ClientError::Timeout {
                socket: self.socket.display().to_string(),
                after,
            };
        }
        self.connect_error(err)
    }

    fn connect_error(&self, err: reqwest::Error) -> ClientError {
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            reason = cause.to_string();
            source = cause.source();
        }
        ClientError::Connect {
            socket: self.socket.display().to_string(),
            reason,
        }
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = if text.is_empty() {
            status.to_string()
        } else {
            ErrorBody::message_of(text)
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Info;

    #[tokio::test]
    async fn a_daemon_that_does_not_answer_in_time_is_a_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("hoist.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        // Accepts and holds the connection without answering.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = Client::unix(&socket)
            .expect("client")
            .with_timeout(Duration::from_millis(200));
        let err = client.call::<Info>(&(), &()).await.expect_err("no answer");
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("did not answer within"), "{err}");
        holder.abort();
    }

    #[tokio::test]
    async fn no_daemon_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = Client::unix(dir.path().join("absent.sock")).expect("client");
        let err = client.call::<Info>(&(), &()).await.expect_err("no daemon");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }
}
