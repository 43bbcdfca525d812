//! Assertions on call results. Every failure message shows the whole
//! status, so a wrong code also tells what the server said.

use std::fmt::Debug;

use tollgate_client::{
    tonic::{Code, Response, Status},
    tonic_types::StatusExt as _,
};

/// The `ErrorInfo.domain` every Tollgate error carries.
pub const ERROR_DOMAIN: &str = "tollgate.dev";

/// Assertions on `Result<tonic::Response<T>, tonic::Status>`.
pub trait RpcResult<T> {
    /// The message of a successful call; panics with the status otherwise.
    fn expect_ok(self) -> T;

    /// The status of a call that must fail, whatever the code.
    fn expect_failure(self) -> Status;

    /// The status of a call that must fail with `code`; also checks that
    /// the status carries Tollgate's `ErrorInfo`.
    fn expect_code(self, code: Code) -> Status;

    /// The status of a call that must fail with INVALID_ARGUMENT and a
    /// `BadRequest` field violation naming `field`.
    fn expect_invalid(self, field: &str) -> Status;
}

impl<T: Debug> RpcResult<T> for Result<Response<T>, Status> {
    #[track_caller]
    fn expect_ok(self) -> T {
        match self {
            Ok(r) => r.into_inner(),
            Err(s) => panic!(
                "expected OK, got {:?}: {:?} (details: {:?})",
                s.code(),
                s.message(),
                s.get_error_details()
            ),
        }
    }

    #[track_caller]
    fn expect_failure(self) -> Status {
        match self {
            Ok(r) => panic!("expected an error, got OK: {:?}", r.get_ref()),
            Err(s) => s,
        }
    }

    #[track_caller]
    fn expect_code(self, code: Code) -> Status {
        match self {
            Ok(r) => panic!("expected {code:?}, got OK: {:?}", r.get_ref()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    code,
                    "expected {code:?}, got {:?}: {:?} (details: {:?})",
                    s.code(),
                    s.message(),
                    s.get_error_details()
                );
                assert_error_info(&s);
                s
            }
        }
    }

    #[track_caller]
    fn expect_invalid(self, field: &str) -> Status {
        let s = self.expect_code(Code::InvalidArgument);
        let fields = violated_fields(&s);
        assert!(
            fields.iter().any(|f| f == field),
            "expected a field violation on {field:?}, got {fields:?} ({:?})",
            s.message()
        );
        s
    }
}

/// The fields named by the status's `BadRequest` detail.
pub fn violated_fields(s: &Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|br| br.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Checks the `ErrorInfo` detail: Tollgate's domain and a reason.
#[track_caller]
pub fn assert_error_info(s: &Status) {
    let info = s.get_details_error_info().unwrap_or_else(|| {
        panic!(
            "{:?} {:?} carries no google.rpc.ErrorInfo",
            s.code(),
            s.message()
        )
    });
    assert_eq!(info.domain, ERROR_DOMAIN, "ErrorInfo of {s:?}");
    assert!(!info.reason.is_empty(), "ErrorInfo without reason: {s:?}");
}
