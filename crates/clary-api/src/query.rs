//! The query-protocol services (form body in, XML out): STS `GetCallerIdentity` and IAM
//! `GetRole`, which the SDK calls to learn the account and to turn a role name into an ARN.

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
        ("sts", "GetCallerIdentity") => xml(
            StatusCode::OK,
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><UserId>{ak}</UserId><Account>{acct}</Account><Arn>arn:aws:iam::{acct}:user/clary</Arn></GetCallerIdentityResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                ak = xml_escape(&state.keys.access_key),
                acct = state.account
            ),
        ),
        ("iam", "GetRole") => {
            let Some(name) = get("RoleName").filter(|n| !n.is_empty() && n.len() <= 64) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ValidationError",
                    "RoleName must be 1 to 64 characters",
                );
            };
            let arn = role_arn(&state.account, name);
            // A stable, name-derived id: the same role name always looks the same.
            let digest =
                md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(name.as_bytes()));
            let id = format!("AROA{}", hex::encode(&digest[..8]).to_uppercase());
            xml(
                StatusCode::OK,
                format!(
                    "<GetRoleResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GetRoleResult><Role><Path>/</Path><RoleName>{n}</RoleName><RoleId>{id}</RoleId><Arn>{arn}</Arn><CreateDate>2026-01-01T00:00:00Z</CreateDate><AssumeRolePolicyDocument>%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D</AssumeRolePolicyDocument><MaxSessionDuration>3600</MaxSessionDuration></Role></GetRoleResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></GetRoleResponse>",
                    n = xml_escape(name),
                    arn = xml_escape(&arn)
                ),
            )
        }
        (svc, act) => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!(
                "The action {act:?} of service {svc} is not valid for this endpoint; Clary serves sts:GetCallerIdentity and iam:GetRole"
            ),
        ),
    }
}
