//! The request every `List<Kind>Jobs` shares (`ListTrainingJobs`, `ListProcessingJobs`,
//! `ListTransformJobs`): name, status and time filters, order and page, read once for all kinds.

use crate::validate::{self, fail};
use crate::wire::{str_field, time_field};
use clary_control::ControlError;
use clary_control::domain::job::{JobStatus, ListJobs, SortBy};
use serde_json::Value;

/// `TrainingJobStatus` as the model lists it (`Deleting` included, which no job of Clary's is in).
pub const TRAINING_JOB_STATUSES: &[&str] = &[
    "InProgress",
    "Completed",
    "Failed",
    "Stopping",
    "Stopped",
    "Deleting",
];

/// `ProcessingJobStatus` as the model lists it.
pub const PROCESSING_JOB_STATUSES: &[&str] =
    &["InProgress", "Completed", "Failed", "Stopping", "Stopped"];

/// The filters, order and page of a listing request. `statuses` is the model's `StatusEquals`
/// enum for the kind; a status in it that no job of Clary's is ever in (training's `Deleting`)
/// gives `Ok(None)`: an empty page.
pub fn list_query(body: &Value, statuses: &[&str]) -> Result<Option<ListJobs>, ControlError> {
    let max_results = validate::page_size(body, "MaxResults", "maxResults", 100)?;
    let status_equals = match str_field(body, "StatusEquals") {
        None => None,
        Some(s) => match JobStatus::parse(s) {
            Some(status) => Some(status),
            None if statuses.contains(&s) => return Ok(None),
            None => {
                return Err(fail(
                    s,
                    "statusEquals",
                    &format!(
                        "Member must satisfy enum value set: [{}]",
                        statuses.join(", ")
                    ),
                ));
            }
        },
    };
    if let Some(n) = str_field(body, "NameContains")
        && n.chars().count() > 63
    {
        return Err(fail(
            n,
            "nameContains",
            "Member must have length less than or equal to 63",
        ));
    }
    let offset = match str_field(body, "NextToken") {
        Some(t) => t.parse().map_err(|_| {
            ControlError::Validation(format!(
                "Invalid pagination token {t:?}; pass the NextToken of the previous response"
            ))
        })?,
        None => 0,
    };
    Ok(Some(ListJobs {
        name_contains: str_field(body, "NameContains").map(str::to_string),
        status_equals,
        creation_time_after: time_field(body, "CreationTimeAfter"),
        creation_time_before: time_field(body, "CreationTimeBefore"),
        last_modified_time_after: time_field(body, "LastModifiedTimeAfter"),
        last_modified_time_before: time_field(body, "LastModifiedTimeBefore"),
        sort_by: match str_field(body, "SortBy") {
            Some("Name") => SortBy::Name,
            Some("Status") => SortBy::Status,
            _ => SortBy::CreationTime,
        },
        ascending: str_field(body, "SortOrder") == Some("Ascending"),
        max_results: max_results.unwrap_or(10) as u32,
        offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_follow_the_kinds_enum() {
        let e = list_query(
            &json!({"StatusEquals": "Deleting"}),
            PROCESSING_JOB_STATUSES,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("[InProgress, Completed, Failed, Stopping, Stopped]"),
            "{e}"
        );
        // Training's enum has Deleting, which no job is ever in: an empty page.
        assert!(
            list_query(&json!({"StatusEquals": "Deleting"}), TRAINING_JOB_STATUSES)
                .unwrap()
                .is_none()
        );
        let q = list_query(
            &json!({"SortBy": "Name", "SortOrder": "Ascending", "NextToken": "20"}),
            TRAINING_JOB_STATUSES,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (q.sort_by, q.ascending, q.offset, q.max_results),
            (SortBy::Name, true, 20, 10)
        );
        let long = "n".repeat(64);
        assert!(list_query(&json!({ "NameContains": long }), TRAINING_JOB_STATUSES).is_err());
    }
}
