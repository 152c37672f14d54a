//! `$/progress` for plan work: begin, reports, end, cancellable by the user
//! (`window/workDoneProgress/cancel`) and ended even when the request is dropped.

use std::sync::{Arc, Mutex};

use tower_lsp::Client;
use tower_lsp::lsp_types::notification::Progress as ProgressNotification;
use tower_lsp::lsp_types::request::WorkDoneProgressCreate;
use tower_lsp::lsp_types::*;

use super::session::Session;
use crate::models::Cancel;
use crate::sync::lock;

/// Sends `$/progress` for one token; silent when the client does not show progress.
#[derive(Clone)]
pub(super) struct Reporter {
    client: Client,
    token: Option<NumberOrString>,
}

impl Reporter {
    pub(super) async fn report(&self, message: String, percentage: Option<u32>) {
        self.send(WorkDoneProgress::Report(WorkDoneProgressReport {
            cancellable: Some(true),
            message: Some(message),
            percentage,
        }))
        .await;
    }

    async fn send(&self, value: WorkDoneProgress) {
        if let Some(token) = &self.token {
            self.client
                .send_notification::<ProgressNotification>(ProgressParams {
                    token: token.clone(),
                    value: ProgressParamsValue::WorkDone(value),
                })
                .await;
        }
    }
}

/// One piece of plan work shown with `$/progress`, cancellable by the user. If the request
/// is dropped before `end` (`$/cancelRequest`), the progress still ends and its cancel flag
/// is forgotten.
pub(super) struct WorkProgress {
    pub(super) reporter: Reporter,
    session: Arc<Mutex<Session>>,
    ended: bool,
}

impl WorkProgress {
    /// Uses the client's token when it gave one, else creates one when the client shows
    /// progress.
    pub(super) async fn start(
        client: &Client,
        session: &Arc<Mutex<Session>>,
        supported: bool,
        given: Option<NumberOrString>,
        name: &str,
        title: &str,
        cancel: &Cancel,
    ) -> WorkProgress {
        let token = match given {
            Some(token) => Some(token),
            None if supported => {
                let token = NumberOrString::String(format!("tierls/{name}"));
                client
                    .send_request::<WorkDoneProgressCreate>(WorkDoneProgressCreateParams {
                        token: token.clone(),
                    })
                    .await
                    .ok()
                    .map(|()| token)
            }
            None => None,
        };
        if let Some(token) = &token {
            lock(session).plans.start(token_key(token), cancel.clone());
        }
        let progress = WorkProgress {
            reporter: Reporter {
                client: client.clone(),
                token,
            },
            session: session.clone(),
            ended: false,
        };
        progress
            .reporter
            .send(WorkDoneProgress::Begin(WorkDoneProgressBegin {
                title: title.to_owned(),
                cancellable: Some(true),
                message: None,
                percentage: Some(0),
            }))
            .await;
        progress
    }

    pub(super) async fn end(&mut self, message: String) {
        self.ended = true;
        self.forget();
        self.reporter
            .send(WorkDoneProgress::End(WorkDoneProgressEnd {
                message: Some(message),
            }))
            .await;
    }

    fn forget(&self) {
        if let Some(token) = &self.reporter.token {
            lock(&self.session).plans.finish(&token_key(token));
        }
    }
}

impl Drop for WorkProgress {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.forget();
        let reporter = self.reporter.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let end = WorkDoneProgressEnd {
                    message: Some("cancelled: nothing changed".into()),
                };
                reporter.send(WorkDoneProgress::End(end)).await;
            });
        }
    }
}

pub(super) fn token_key(token: &NumberOrString) -> String {
    match token {
        NumberOrString::Number(number) => number.to_string(),
        NumberOrString::String(text) => text.clone(),
    }
}

/// Raises the cancel flag when the request's future is dropped (`$/cancelRequest`).
pub(super) struct CancelOnDrop(pub Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
