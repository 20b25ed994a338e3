//! The query-protocol services (form body in, XML out): STS `GetCallerIdentity` and IAM
//! `GetRole` and `SimulatePrincipalPolicy`, which the SDK calls to learn the account, to turn a
//! role name into an ARN, and (v3's `ModelTrainer`) to check that the role may train and that
//! SageMaker may assume it. Clary has no policy language: its one principal may do everything.

use crate::{ApiState, Body, full, request_id};
use http::{Response, StatusCode};

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A query-protocol form body as its `(name, value)` pairs.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn xml(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .header("x-amzn-requestid", request_id())
        .body(full(body))
        .expect("static response parts are valid")
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    xml(
        status,
        format!(
            "<ErrorResponse><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            xml_escape(code),
            xml_escape(message),
            request_id()
        ),
    )
}

/// The role the server's principal acts as: a session of it, as a SageMaker notebook's
/// identity is. The SDK (v2's `get_execution_role`, v3's `role=None` for serving) turns a
/// caller's assumed role into the execution role; an IAM user it cannot. `clary env` names the
/// same role as the SDK config's default.
pub const CALLER_ROLE: &str = "SageMakerRole";

/// The session name in the caller's assumed-role ARN.
const CALLER_SESSION: &str = "clary";

/// A stable, name-derived role id: the same role name always looks the same.
fn role_id(name: &str) -> String {
    let digest = md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(name.as_bytes()));
    format!("AROA{}", hex::encode(&digest[..8]).to_uppercase())
}

/// `GetCallerIdentityResponse`: a session of [`CALLER_ROLE`] in `account`.
fn caller_identity_xml(account: &str, rid: &str) -> String {
    format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><UserId>{id}:{CALLER_SESSION}</UserId><Account>{account}</Account><Arn>arn:aws:sts::{account}:assumed-role/{CALLER_ROLE}/{CALLER_SESSION}</Arn></GetCallerIdentityResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        id = role_id(CALLER_ROLE),
    )
}

/// The role ARN a role name resolves to: stable, in this server's account.
pub fn role_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

pub fn handle(state: &ApiState, service: &str, body: &[u8]) -> Response<Body> {
    let params = form(body);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let action = get("Action").unwrap_or("");
    let rid = request_id();
    match (service, action) {
        ("sts", "GetCallerIdentity") => {
            xml(StatusCode::OK, caller_identity_xml(&state.account, &rid))
        }
        ("iam", "GetRole") => {
            let Some(name) = get("RoleName").filter(|n| !n.is_empty() && n.len() <= 64) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationError",
                    "RoleName must be 1 to 64 characters",
                );
            };
            xml(StatusCode::OK, get_role_xml(&state.account, name, &rid))
        }
        ("iam", "SimulatePrincipalPolicy") => {
            let source = get("PolicySourceArn").unwrap_or("");
            let actions = member_list(&params, "ActionNames");
            let resources = member_list(&params, "ResourceArns");
            match simulate_principal_policy_xml(source, &actions, &resources, &rid) {
                Ok(body) => xml(StatusCode::OK, body),
                Err(message) => error(StatusCode::BAD_REQUEST, "ValidationError", &message),
            }
        }
        (svc, act) => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!(
                "The action {act:?} of service {svc} is not valid for this endpoint; Clary serves sts:GetCallerIdentity, iam:GetRole and iam:SimulatePrincipalPolicy"
            ),
        ),
    }
}

/// The trust policy every role has here: SageMaker may assume it (what the SDK v3 checks before
/// it trains), as the role a SageMaker user creates for it says.
const SAGEMAKER_TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sagemaker.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// RFC 3986 percent-encoding, as IAM encodes the policy documents it returns (botocore decodes
/// them back into JSON).
fn rfc3986(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// `GetRoleResponse` for `name` in `account`.
fn get_role_xml(account: &str, name: &str, rid: &str) -> String {
    let arn = role_arn(account, name);
    let id = role_id(name);
    format!(
        "<GetRoleResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GetRoleResult><Role><Path>/</Path><RoleName>{n}</RoleName><RoleId>{id}</RoleId><Arn>{arn}</Arn><CreateDate>2026-01-01T00:00:00Z</CreateDate><AssumeRolePolicyDocument>{policy}</AssumeRolePolicyDocument><MaxSessionDuration>3600</MaxSessionDuration></Role></GetRoleResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></GetRoleResponse>",
        n = xml_escape(name),
        arn = xml_escape(&arn),
        policy = rfc3986(SAGEMAKER_TRUST_POLICY),
    )
}

/// The values of a query-protocol list parameter (`Name.member.1`, `Name.member.2`, …), in
/// index order.
fn member_list(params: &[(String, String)], name: &str) -> Vec<String> {
    let prefix = format!("{name}.member.");
    let mut items: Vec<(u32, String)> = params
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, v.clone()))
        })
        .collect();
    items.sort_by_key(|(n, _)| *n);
    items.into_iter().map(|(_, v)| v).collect()
}

/// The statement every decision cites: the one allow-everything policy of the principal.
fn matched_statement(source_type: &str) -> String {
    format!(
        "<MatchedStatements><member><SourcePolicyId>clary-allow-all</SourcePolicyId><SourcePolicyType>{source_type}</SourcePolicyType><StartPosition><Line>1</Line><Column>1</Column></StartPosition><EndPosition><Line>1</Line><Column>1</Column></EndPosition></member></MatchedStatements>"
    )
}

/// `SimulatePrincipalPolicy`'s answer: every action allowed, on `*` or, with `ResourceArns`, on
/// each resource (then also per resource in `ResourceSpecificResults`, as IAM answers). `Err`
/// is a validation message.
fn simulate_principal_policy_xml(
    source: &str,
    actions: &[String],
    resources: &[String],
    rid: &str,
) -> Result<String, String> {
    if !(source.starts_with("arn:") && source.len() >= 20 && source.len() <= 2048) {
        return Err(format!(
            "1 validation error detected: Value {source:?} at 'policySourceArn' failed to satisfy constraint: it must be the ARN of an IAM user, group or role (20 to 2048 characters), such as arn:aws:iam::123456789012:role/SageMakerRole"
        ));
    }
    if actions.is_empty() {
        return Err(
            "1 validation error detected: Value null at 'actionNames' failed to satisfy constraint: Member must not be null; name at least one action, such as sagemaker:CreateTrainingJob".into(),
        );
    }
    let source_type = if source.contains(":role/") {
        "role"
    } else if source.contains(":group/") {
        "group"
    } else {
        "user"
    };
    let matched = matched_statement(source_type);
    let mut results = String::new();
    let resource_names: Vec<&str> = if resources.is_empty() {
        vec!["*"]
    } else {
        resources.iter().map(String::as_str).collect()
    };
    for action in actions {
        for resource in &resource_names {
            let per_resource = if resources.is_empty() {
                String::new()
            } else {
                format!(
                    "<ResourceSpecificResults><member><EvalResourceName>{r}</EvalResourceName><EvalResourceDecision>allowed</EvalResourceDecision>{matched}<MissingContextValues/></member></ResourceSpecificResults>",
                    r = xml_escape(resource)
                )
            };
            results.push_str(&format!(
                "<member><EvalActionName>{a}</EvalActionName><EvalResourceName>{r}</EvalResourceName><EvalDecision>allowed</EvalDecision>{matched}<MissingContextValues/>{per_resource}</member>",
                a = xml_escape(action),
                r = xml_escape(resource)
            ));
        }
    }
    Ok(format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>{results}</EvaluationResults></SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_role_carries_a_url_encoded_trust_policy_for_sagemaker() {
        let body = get_role_xml("111122223333", "SageMakerRole", "r");
        let start = body.find("<AssumeRolePolicyDocument>").unwrap() + 26;
        let end = body.find("</AssumeRolePolicyDocument>").unwrap();
        let encoded = &body[start..end];
        assert!(!encoded.contains(['{', '"', ':']), "{encoded}");
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .unwrap();
        let policy: serde_json::Value = serde_json::from_str(&decoded).unwrap();
        let st = &policy["Statement"][0];
        assert_eq!(st["Effect"], "Allow");
        assert_eq!(st["Principal"]["Service"], "sagemaker.amazonaws.com");
        assert_eq!(st["Action"], "sts:AssumeRole");
        assert!(body.contains("<Arn>arn:aws:iam::111122223333:role/SageMakerRole</Arn>"));
    }

    #[test]
    fn the_caller_is_a_session_of_the_role_get_role_describes() {
        let body = caller_identity_xml("111122223333", "r");
        assert!(
            body.contains("<Arn>arn:aws:sts::111122223333:assumed-role/SageMakerRole/clary</Arn>")
        );
        assert!(body.contains(&format!(
            "<UserId>{}:clary</UserId>",
            role_id("SageMakerRole")
        )));
        assert!(
            get_role_xml("111122223333", CALLER_ROLE, "r")
                .contains(&format!("<RoleId>{}</RoleId>", role_id(CALLER_ROLE)))
        );
    }

    #[test]
    fn list_parameters_come_back_in_index_order() {
        let params = form(b"Action=SimulatePrincipalPolicy&ActionNames.member.2=s3%3AGetObject&ActionNames.member.1=sagemaker%3ACreateTrainingJob&ActionNames.member.10=x&Other.member.1=y");
        assert_eq!(
            member_list(&params, "ActionNames"),
            ["sagemaker:CreateTrainingJob", "s3:GetObject", "x"]
        );
    }

    #[test]
    fn simulation_allows_every_action_with_and_without_resources() {
        let role = "arn:aws:iam::123456789012:role/SageMakerRole";
        let actions = [
            "sagemaker:CreateTrainingJob".to_string(),
            "s3:GetObject".into(),
        ];
        let body = simulate_principal_policy_xml(role, &actions, &[], "r").unwrap();
        assert_eq!(
            body.matches("<EvalDecision>allowed</EvalDecision>").count(),
            2
        );
        assert_eq!(
            body.matches("<EvalResourceName>*</EvalResourceName>")
                .count(),
            2
        );
        assert!(body.contains("<IsTruncated>false</IsTruncated>"));
        assert!(body.contains("<SourcePolicyType>role</SourcePolicyType>"));
        assert!(!body.contains("ResourceSpecificResults"));

        let resources = ["arn:aws:s3:::b/*".to_string(), "arn:aws:s3:::c".into()];
        let body = simulate_principal_policy_xml(role, &actions, &resources, "r").unwrap();
        // One result per action and resource, each with its resource-specific result.
        assert_eq!(
            body.matches("<EvalDecision>allowed</EvalDecision>").count(),
            4
        );
        assert_eq!(
            body.matches("<EvalResourceDecision>allowed</EvalResourceDecision>")
                .count(),
            4
        );
        assert!(body.contains("<EvalResourceName>arn:aws:s3:::b/*</EvalResourceName>"));

        assert!(simulate_principal_policy_xml("nope", &actions, &[], "r").is_err());
        let err = simulate_principal_policy_xml(role, &[], &[], "r").unwrap_err();
        assert!(err.contains("actionNames"), "{err}");
    }
}
