//! A panic in one handler answers that request with an error and leaves the server running.
//!
//! tower-lsp polls every handler inside the service future; a panic there would unwind
//! through its server loop and end the session. [`CatchPanic`] wraps the service and turns
//! a panicking request into a JSON-RPC `InternalError` that names the method, and a
//! panicking notification into a logged error. State stays usable afterwards: every lock
//! is taken through [`crate::sync::lock`], which recovers a poisoned mutex.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use tower_lsp::jsonrpc::{Error, ErrorCode, Request, Response};
use tower_service::Service;

pub struct CatchPanic<S>(pub S);

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = Option<Response>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Option<Response>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Option<Response>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = request.method().to_owned();
        let id = request.id().cloned();
        // A panic may also come from the call itself, before any future exists.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.0.call(request)));
        let future = match called {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().boxed(),
            Err(panic) => futures::future::ready(Err(panic)).boxed(),
        };
        Box::pin(async move {
            match future.await {
                Ok(result) => result,
                Err(panic) => {
                    let what = panic_message(panic.as_ref());
                    tracing::error!(target: "tierls", "{method} panicked: {what}");
                    Ok(id.map(|id| {
                        Response::from_error(
                            id,
                            Error {
                                code: ErrorCode::InternalError,
                                message: format!("tierls failed on {method}: {what}").into(),
                                data: None,
                            },
                        )
                    }))
                }
            }
        })
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with no message".to_owned()
    }
}
