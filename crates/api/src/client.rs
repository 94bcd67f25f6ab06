//! The control API client used by CLI commands: JSON over HTTP on the daemon's unix
//! socket.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ErrorBody;

/// Why a call failed, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the hoist daemon at unix://{socket}: {reason}. Is `hoist daemon` running, and is --host or HOIST_HOST right?")]
    Connect { socket: String, reason: String },
    /// The daemon refused the request; its message says why.
    #[error("{message}")]
    Api { status: u16, message: String },
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
}

impl Client {
    pub fn unix(socket: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let socket = socket.into();
        let http = reqwest::Client::builder()
            .unix_socket(socket.clone())
            // Writes wait for a quorum; a cluster that lost it answers "no quorum"
            // within seconds, so a minute is only reached by a stuck daemon.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|err| ClientError::Protocol(err.to_string()))?;
        Ok(Client { http, socket })
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::DELETE, path, None).await
    }

    /// A raw GET whose body is streamed (logs, progress).
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let response = self
            .http
            .get(format!("http://hoist{path}"))
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|err| self.connect_error(err))?;
        Self::check(response).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, format!("http://hoist{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.connect_error(err))?;
        let response = Self::check(response).await?;
        response
            .json()
            .await
            .map_err(|err| ClientError::Protocol(err.to_string()))
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
