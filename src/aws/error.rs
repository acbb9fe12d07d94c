//! EC2 errors, classified by their typed code (from the SDK's error metadata) and HTTP status,
//! never by matching text: what the reconciler does next depends only on `ErrorKind`.

/// The EC2 error codes the operator acts on; any other code is kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    // A resource named in the request does not exist (any more).
    VpcEndpointNotFound,
    GroupNotFound,
    SubnetNotFound,
    VpcNotFound,
    InstanceNotFound,
    PermissionNotFound,
    // What the request would create exists already.
    GroupDuplicate,
    PermissionDuplicate,
    IdempotentParameterMismatch,
    /// A security group still referenced (by an endpoint's network interfaces).
    DependencyViolation,
    /// The resource is in a state that does not allow the change yet (e.g. pending).
    IncorrectState,
    RequestLimitExceeded,
    InternalError,
    ServiceUnavailable,
    UnauthorizedOperation,
    VpcEndpointLimitExceeded,
    SecurityGroupLimitExceeded,
    RulesLimitExceeded,
    TagLimitExceeded,
    InvalidParameter,
    DuplicateSubnetsInSameZone,
    InvalidServiceName,
    /// DeleteVpcEndpoints answered 200 with unsuccessful items (other than "not found").
    Unsuccessful,
    /// The request never left: STS would not let the operator assume the account's role
    /// (trust policy, external id) or could not be reached.
    AssumeRoleFailed,
    /// The request's credentials (an assumed role's session) had expired.
    SessionExpired,
    /// No answer: timeout, connection failure, unreadable response.
    Transport(&'static str),
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> Self {
        use ErrorCode::*;
        match code {
            "InvalidVpcEndpointId.NotFound" | "InvalidVpcEndpoint.NotFound" => VpcEndpointNotFound,
            "InvalidGroup.NotFound" | "InvalidGroupId.NotFound" => GroupNotFound,
            "InvalidSubnetID.NotFound" | "InvalidSubnetId.NotFound" => SubnetNotFound,
            "InvalidVpcID.NotFound" | "InvalidVpcId.NotFound" => VpcNotFound,
            "InvalidInstanceID.NotFound" => InstanceNotFound,
            "InvalidPermission.NotFound" => PermissionNotFound,
            "InvalidGroup.Duplicate" => GroupDuplicate,
            "InvalidPermission.Duplicate" => PermissionDuplicate,
            "IdempotentParameterMismatch" => IdempotentParameterMismatch,
            "DependencyViolation" => DependencyViolation,
            "IncorrectState" | "InvalidVpcEndpointState" | "IncorrectInstanceState" => {
                IncorrectState
            }
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "TooManyRequestsException" => RequestLimitExceeded,
            "InternalError" | "InternalFailure" | "ServerInternal" => InternalError,
            "ServiceUnavailable" | "Unavailable" => ServiceUnavailable,
            "UnauthorizedOperation" | "AuthFailure" | "AccessDenied" => UnauthorizedOperation,
            "VpcEndpointLimitExceeded" => VpcEndpointLimitExceeded,
            "SecurityGroupLimitExceeded" => SecurityGroupLimitExceeded,
            "RulesPerSecurityGroupLimitExceeded" => RulesLimitExceeded,
            "TagLimitExceeded" => TagLimitExceeded,
            "InvalidParameter"
            | "InvalidParameterValue"
            | "InvalidParameterCombination"
            | "MissingParameter"
            | "InvalidGroupId.Malformed"
            | "InvalidVpcEndpointId.Malformed"
            | "InvalidSubnetID.Malformed"
            | "InvalidPolicyDocument" => InvalidParameter,
            "DuplicateSubnetsInSameZone" => DuplicateSubnetsInSameZone,
            "InvalidServiceName" => InvalidServiceName,
            "Unsuccessful" => Unsuccessful,
            "AssumeRoleFailed" => AssumeRoleFailed,
            "ExpiredToken" | "ExpiredTokenException" => SessionExpired,
            other => Other(other.to_string()),
        }
    }

    /// The code as AWS spells it (the first spelling, for codes with several).
    pub fn as_str(&self) -> &str {
        use ErrorCode::*;
        match self {
            VpcEndpointNotFound => "InvalidVpcEndpointId.NotFound",
            GroupNotFound => "InvalidGroup.NotFound",
            SubnetNotFound => "InvalidSubnetID.NotFound",
            VpcNotFound => "InvalidVpcID.NotFound",
            InstanceNotFound => "InvalidInstanceID.NotFound",
            PermissionNotFound => "InvalidPermission.NotFound",
            GroupDuplicate => "InvalidGroup.Duplicate",
            PermissionDuplicate => "InvalidPermission.Duplicate",
            IdempotentParameterMismatch => "IdempotentParameterMismatch",
            DependencyViolation => "DependencyViolation",
            IncorrectState => "IncorrectState",
            RequestLimitExceeded => "RequestLimitExceeded",
            InternalError => "InternalError",
            ServiceUnavailable => "ServiceUnavailable",
            UnauthorizedOperation => "UnauthorizedOperation",
            VpcEndpointLimitExceeded => "VpcEndpointLimitExceeded",
            SecurityGroupLimitExceeded => "SecurityGroupLimitExceeded",
            RulesLimitExceeded => "RulesPerSecurityGroupLimitExceeded",
            TagLimitExceeded => "TagLimitExceeded",
            InvalidParameter => "InvalidParameterValue",
            DuplicateSubnetsInSameZone => "DuplicateSubnetsInSameZone",
            InvalidServiceName => "InvalidServiceName",
            Unsuccessful => "Unsuccessful",
            AssumeRoleFailed => "AssumeRoleFailed",
            SessionExpired => "ExpiredToken",
            Transport(kind) => kind,
            Other(code) => code,
        }
    }
}

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A resource vanished between describe and change: observe again at once.
    Vanished,
    /// Throttling, 5xx, no answer, a resource still settling: retry with backoff.
    Retry,
    /// A security group still held by an endpoint's network interfaces: wait for them.
    InUse,
    /// What a create or rule change would make is already there (a retry after a lost answer).
    AlreadyDone,
    /// AWS will not do this as asked; retrying will not help. A person must act.
    Terminal,
}

/// An EC2 error: the operation, its typed code, AWS's message and the HTTP status if any.
#[derive(Debug, Clone, thiserror::Error)]
#[error("EC2 {operation} failed: {}: {message}", code.as_str())]
pub struct AwsError {
    pub operation: &'static str,
    pub code: ErrorCode,
    pub message: String,
    pub status: Option<u16>,
}

impl AwsError {
    pub fn new(operation: &'static str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            operation,
            code,
            message: message.into(),
            status: None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        use ErrorCode::*;
        match &self.code {
            VpcEndpointNotFound | GroupNotFound | SubnetNotFound | VpcNotFound
            | InstanceNotFound => ErrorKind::Vanished,
            PermissionNotFound | PermissionDuplicate | GroupDuplicate => ErrorKind::AlreadyDone,
            DependencyViolation => ErrorKind::InUse,
            IncorrectState | RequestLimitExceeded | InternalError | ServiceUnavailable
            | Transport(_) => ErrorKind::Retry,
            // A trust policy fixed, a session refreshed: retried with backoff.
            AssumeRoleFailed | SessionExpired => ErrorKind::Retry,
            UnauthorizedOperation
            | VpcEndpointLimitExceeded
            | SecurityGroupLimitExceeded
            | RulesLimitExceeded
            | TagLimitExceeded
            | InvalidParameter
            | DuplicateSubnetsInSameZone
            | InvalidServiceName
            | IdempotentParameterMismatch
            | Unsuccessful => ErrorKind::Terminal,
            // An unknown code: the HTTP status says whose fault it is.
            Other(_) => match self.status {
                Some(s) if s >= 500 => ErrorKind::Retry,
                Some(s) if (400..500).contains(&s) => ErrorKind::Terminal,
                _ => ErrorKind::Retry,
            },
        }
    }

    /// The condition reason of a failure of the account's credentials, if it is one.
    pub fn credentials_reason(&self) -> Option<&'static str> {
        match self.code {
            ErrorCode::AssumeRoleFailed => Some("AssumeRoleFailed"),
            ErrorCode::SessionExpired => Some("SessionExpired"),
            _ => None,
        }
    }

    /// A short, human sentence for a condition message (AWS's message, bounded).
    pub fn summary(&self) -> String {
        let msg = self.message.trim();
        let msg = if msg.chars().count() > 300 {
            format!("{}…", msg.chars().take(300).collect::<String>())
        } else {
            msg.to_string()
        };
        if msg.is_empty() {
            format!("{} returned {}", self.operation, self.code.as_str())
        } else {
            format!("{} returned {}: {msg}", self.operation, self.code.as_str())
        }
    }
}

pub type AwsResult<T> = Result<T, AwsError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, status: Option<u16>) -> AwsError {
        AwsError {
            operation: "Op",
            code: ErrorCode::parse(code),
            message: "m".into(),
            status,
        }
    }

    #[test]
    fn classification_table() {
        use ErrorKind::*;
        let table: &[(&str, Option<u16>, ErrorKind)] = &[
            ("InvalidVpcEndpointId.NotFound", Some(400), Vanished),
            ("InvalidVpcEndpoint.NotFound", Some(400), Vanished),
            ("InvalidGroup.NotFound", Some(400), Vanished),
            ("InvalidSubnetID.NotFound", Some(400), Vanished),
            ("InvalidVpcID.NotFound", Some(400), Vanished),
            ("InvalidPermission.NotFound", Some(400), AlreadyDone),
            ("InvalidPermission.Duplicate", Some(400), AlreadyDone),
            ("InvalidGroup.Duplicate", Some(400), AlreadyDone),
            ("DependencyViolation", Some(400), InUse),
            ("RequestLimitExceeded", Some(503), Retry),
            ("Throttling", Some(400), Retry),
            ("InternalError", Some(500), Retry),
            ("ServiceUnavailable", Some(503), Retry),
            ("IncorrectState", Some(400), Retry),
            ("UnauthorizedOperation", Some(403), Terminal),
            ("VpcEndpointLimitExceeded", Some(400), Terminal),
            ("InvalidParameterValue", Some(400), Terminal),
            ("DuplicateSubnetsInSameZone", Some(400), Terminal),
            ("IdempotentParameterMismatch", Some(400), Terminal),
            ("Unsuccessful", None, Terminal),
            ("ExpiredToken", Some(400), Retry),
            ("AssumeRoleFailed", None, Retry),
            // Unknown codes: by HTTP status.
            ("SomethingNew", Some(502), Retry),
            ("SomethingNew", Some(400), Terminal),
            ("SomethingNew", None, Retry),
        ];
        for (code, status, want) in table {
            assert_eq!(err(code, *status).kind(), *want, "{code} {status:?}");
        }
        let timeout = AwsError::new("Op", ErrorCode::Transport("Timeout"), "");
        assert_eq!(timeout.kind(), Retry);
    }

    #[test]
    fn codes_round_trip_and_summaries_are_bounded() {
        for code in [
            "InvalidVpcEndpointId.NotFound",
            "InvalidGroup.Duplicate",
            "DependencyViolation",
            "SomethingNew",
        ] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
        let mut e = err("InvalidParameterValue", Some(400));
        e.message = "x".repeat(5000);
        assert!(e.summary().chars().count() < 400);
        assert!(
            e.summary()
                .starts_with("Op returned InvalidParameterValue: x")
        );
    }
}
