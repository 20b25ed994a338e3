//! The store's XML answers read into s3s's shapes, field by field as botocore's S3 model names
//! them, and the XML bodies Clary sends it. The readers are lenient where stores differ
//! (elements they add, like Ceph RGW's `<Type>`, are skipped; owners are left out, since the
//! store's user is not Clary's) and strict about the root, so an answer that is not the one
//! asked for is an error. Names stay as the store wrote them: the callers map bucket names.

use clary_client::s3::walk_xml;
use s3s::dto::*;

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The name of a document's root element; `None` for text that is not XML.
pub(super) fn root(xml: &str) -> Option<String> {
    let mut root = None;
    walk_xml(xml, |path, _| {
        if let [name] = path {
            root = Some(name.to_string());
        }
    })
    .ok()?;
    root
}

/// Walks `xml`, whose root must be `want`.
fn read(xml: &str, want: &str, mut on_end: impl FnMut(&[&str], String)) -> Result<(), String> {
    let mut root = None;
    walk_xml(xml, |path, text| {
        if let [name] = path {
            root = Some(name.to_string());
        }
        on_end(path, text)
    })?;
    match root {
        Some(r) if r == want => Ok(()),
        Some(r) => Err(format!("expected {want}, got {r}")),
        None => Err(format!("expected {want}, got an empty answer")),
    }
}

fn flag(text: &str) -> bool {
    text.trim() == "true"
}

fn num<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

fn time(text: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::DateTime, text.trim()).ok()
}

fn etag(text: &str) -> Option<ETag> {
    super::request::etag(text)
}

/// `ListAllMyBucketsResult`: each bucket's name and creation date.
pub(super) fn buckets(xml: &str) -> Result<Vec<Bucket>, String> {
    let mut out = Vec::new();
    let mut b = Bucket::default();
    read(xml, "ListAllMyBucketsResult", |path, text| match path {
        [_, "Buckets", "Bucket", "Name"] => b.name = Some(text),
        [_, "Buckets", "Bucket", "CreationDate"] => b.creation_date = time(&text),
        [_, "Buckets", "Bucket"] => out.push(std::mem::take(&mut b)),
        _ => {}
    })?;
    Ok(out)
}

/// `LocationConstraint`: the bucket's region; empty (us-east-1) as `None`.
pub(super) fn location(xml: &str) -> Result<Option<String>, String> {
    let mut out = None;
    read(xml, "LocationConstraint", |path, text| {
        if path.len() == 1 && !text.trim().is_empty() {
            out = Some(text.trim().to_string());
        }
    })?;
    Ok(out)
}

/// The `Contents` and `CommonPrefixes` of a listing page, read as they close.
#[derive(Default)]
struct Entries {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    object: Object,
}

impl Entries {
    /// Whether `path` was one of the page's entries (and is now taken in).
    fn take(&mut self, path: &[&str], text: &str) -> bool {
        let o = &mut self.object;
        match path {
            [_, "Contents", "Key"] => o.key = Some(text.to_string()),
            [_, "Contents", "LastModified"] => o.last_modified = time(text),
            [_, "Contents", "ETag"] => o.e_tag = etag(text),
            [_, "Contents", "Size"] => o.size = num(text),
            [_, "Contents", "StorageClass"] => o.storage_class = Some(text.to_string().into()),
            [_, "Contents", "ChecksumAlgorithm"] => o
                .checksum_algorithm
                .get_or_insert_with(Vec::new)
                .push(text.to_string().into()),
            [_, "Contents"] => self.contents.push(std::mem::take(o)),
            [_, "CommonPrefixes", "Prefix"] => self.prefixes.push(CommonPrefix {
                prefix: Some(text.to_string()),
            }),
            _ => return false,
        }
        true
    }
}

/// `ListBucketResult` of ListObjects (v1).
pub(super) fn list_objects(xml: &str) -> Result<ListObjectsOutput, String> {
    let mut o = ListObjectsOutput::default();
    let mut e = Entries::default();
    read(xml, "ListBucketResult", |path, text| {
        if e.take(path, &text) {
            return;
        }
        match path {
            [_, "Name"] => o.name = Some(text),
            [_, "Prefix"] => o.prefix = Some(text),
            [_, "Marker"] => o.marker = Some(text),
            [_, "NextMarker"] => o.next_marker = Some(text),
            [_, "MaxKeys"] => o.max_keys = num(&text),
            [_, "Delimiter"] => o.delimiter = Some(text),
            [_, "IsTruncated"] => o.is_truncated = Some(flag(&text)),
            [_, "EncodingType"] => o.encoding_type = Some(text.into()),
            _ => {}
        }
    })?;
    o.contents = Some(e.contents);
    o.common_prefixes = Some(e.prefixes);
    Ok(o)
}

/// `ListBucketResult` of ListObjectsV2.
pub(super) fn list_objects_v2(xml: &str) -> Result<ListObjectsV2Output, String> {
    let mut o = ListObjectsV2Output::default();
    let mut e = Entries::default();
    read(xml, "ListBucketResult", |path, text| {
        if e.take(path, &text) {
            return;
        }
        match path {
            [_, "Name"] => o.name = Some(text),
            [_, "Prefix"] => o.prefix = Some(text),
            [_, "MaxKeys"] => o.max_keys = num(&text),
            [_, "KeyCount"] => o.key_count = num(&text),
            [_, "ContinuationToken"] => o.continuation_token = Some(text),
            [_, "NextContinuationToken"] => o.next_continuation_token = Some(text),
            [_, "StartAfter"] => o.start_after = Some(text),
            [_, "Delimiter"] => o.delimiter = Some(text),
            [_, "IsTruncated"] => o.is_truncated = Some(flag(&text)),
            [_, "EncodingType"] => o.encoding_type = Some(text.into()),
            _ => {}
        }
    })?;
    o.contents = Some(e.contents);
    o.common_prefixes = Some(e.prefixes);
    Ok(o)
}

/// `CopyObjectResult`.
pub(super) fn copy_result(xml: &str) -> Result<CopyObjectResult, String> {
    let mut r = CopyObjectResult::default();
    read(xml, "CopyObjectResult", |path, text| match path {
        [_, "ETag"] => r.e_tag = etag(&text),
        [_, "LastModified"] => r.last_modified = time(&text),
        [_, "ChecksumCRC32"] => r.checksum_crc32 = Some(text),
        [_, "ChecksumSHA256"] => r.checksum_sha256 = Some(text),
        _ => {}
    })?;
    Ok(r)
}

/// `InitiateMultipartUploadResult`: the new upload's id.
pub(super) fn upload_id(xml: &str) -> Result<String, String> {
    let mut id = None;
    read(xml, "InitiateMultipartUploadResult", |path, text| {
        if let [_, "UploadId"] = path {
            id = Some(text);
        }
    })?;
    id.filter(|i| !i.is_empty())
        .ok_or_else(|| "the answer has no UploadId".to_string())
}

/// `ListPartsResult`.
pub(super) fn list_parts(xml: &str) -> Result<ListPartsOutput, String> {
    let mut o = ListPartsOutput::default();
    let mut parts = Vec::new();
    let mut p = Part::default();
    read(xml, "ListPartsResult", |path, text| match path {
        [_, "Part", "PartNumber"] => p.part_number = num(&text),
        [_, "Part", "LastModified"] => p.last_modified = time(&text),
        [_, "Part", "ETag"] => p.e_tag = etag(&text),
        [_, "Part", "Size"] => p.size = num(&text),
        [_, "Part", "ChecksumCRC32"] => p.checksum_crc32 = Some(text),
        [_, "Part", "ChecksumSHA256"] => p.checksum_sha256 = Some(text),
        [_, "Part"] => parts.push(std::mem::take(&mut p)),
        [_, "Bucket"] => o.bucket = Some(text),
        [_, "Key"] => o.key = Some(text),
        [_, "UploadId"] => o.upload_id = Some(text),
        [_, "PartNumberMarker"] => o.part_number_marker = num(&text),
        [_, "NextPartNumberMarker"] => o.next_part_number_marker = num(&text),
        [_, "MaxParts"] => o.max_parts = num(&text),
        [_, "IsTruncated"] => o.is_truncated = Some(flag(&text)),
        [_, "StorageClass"] => o.storage_class = Some(text.into()),
        [_, "ChecksumAlgorithm"] => o.checksum_algorithm = Some(text.into()),
        _ => {}
    })?;
    o.parts = Some(parts);
    Ok(o)
}

/// `CompleteMultipartUploadResult`.
pub(super) fn completed(xml: &str) -> Result<CompleteMultipartUploadOutput, String> {
    let mut o = CompleteMultipartUploadOutput::default();
    read(
        xml,
        "CompleteMultipartUploadResult",
        |path, text| match path {
            [_, "Location"] => o.location = Some(text),
            [_, "Bucket"] => o.bucket = Some(text),
            [_, "Key"] => o.key = Some(text),
            [_, "ETag"] => o.e_tag = etag(&text),
            [_, "ChecksumCRC32"] => o.checksum_crc32 = Some(text),
            [_, "ChecksumSHA256"] => o.checksum_sha256 = Some(text),
            _ => {}
        },
    )?;
    Ok(o)
}

/// `ListMultipartUploadsResult`.
pub(super) fn list_uploads(xml: &str) -> Result<ListMultipartUploadsOutput, String> {
    let mut o = ListMultipartUploadsOutput::default();
    let (mut uploads, mut prefixes) = (Vec::new(), Vec::new());
    let mut u = MultipartUpload::default();
    read(xml, "ListMultipartUploadsResult", |path, text| match path {
        [_, "Upload", "Key"] => u.key = Some(text),
        [_, "Upload", "UploadId"] => u.upload_id = Some(text),
        [_, "Upload", "Initiated"] => u.initiated = time(&text),
        [_, "Upload", "StorageClass"] => u.storage_class = Some(text.into()),
        [_, "Upload"] => uploads.push(std::mem::take(&mut u)),
        [_, "CommonPrefixes", "Prefix"] => prefixes.push(CommonPrefix { prefix: Some(text) }),
        [_, "Bucket"] => o.bucket = Some(text),
        [_, "KeyMarker"] => o.key_marker = Some(text),
        [_, "UploadIdMarker"] => o.upload_id_marker = Some(text),
        [_, "NextKeyMarker"] => o.next_key_marker = Some(text),
        [_, "NextUploadIdMarker"] => o.next_upload_id_marker = Some(text),
        [_, "Prefix"] => o.prefix = Some(text),
        [_, "Delimiter"] => o.delimiter = Some(text),
        [_, "MaxUploads"] => o.max_uploads = num(&text),
        [_, "IsTruncated"] => o.is_truncated = Some(flag(&text)),
        [_, "EncodingType"] => o.encoding_type = Some(text.into()),
        _ => {}
    })?;
    o.uploads = Some(uploads);
    o.common_prefixes = Some(prefixes);
    Ok(o)
}

/// `DeleteResult` of DeleteObjects.
pub(super) fn deleted(xml: &str) -> Result<DeleteObjectsOutput, String> {
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    let mut d = DeletedObject::default();
    let mut e = Error::default();
    read(xml, "DeleteResult", |path, text| match path {
        [_, "Deleted", "Key"] => d.key = Some(text),
        [_, "Deleted", "VersionId"] => d.version_id = Some(text),
        [_, "Deleted", "DeleteMarker"] => d.delete_marker = Some(flag(&text)),
        [_, "Deleted", "DeleteMarkerVersionId"] => d.delete_marker_version_id = Some(text),
        [_, "Deleted"] => deleted.push(std::mem::take(&mut d)),
        [_, "Error", "Key"] => e.key = Some(text),
        [_, "Error", "VersionId"] => e.version_id = Some(text),
        [_, "Error", "Code"] => e.code = Some(text),
        [_, "Error", "Message"] => e.message = Some(text),
        [_, "Error"] => errors.push(std::mem::take(&mut e)),
        _ => {}
    })?;
    Ok(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    })
}

fn document<T: s3s::xml::SerializeContent>(root: &str, value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut ser = s3s::xml::Serializer::new(&mut buf);
    // Writing s3s's own shapes into a Vec does not fail.
    let _ = ser.decl();
    let _ = ser.content_with_ns(root, XMLNS, value);
    buf
}

/// The body of DeleteObjects: the client's `Delete` as it sent it.
pub(super) fn delete_body(delete: &Delete) -> Vec<u8> {
    document("Delete", delete)
}

/// The body of CompleteMultipartUpload: the client's parts as it listed them.
pub(super) fn complete_body(upload: &CompletedMultipartUpload) -> Vec<u8> {
    document("CompleteMultipartUpload", upload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceph_listing_reads_with_its_extra_elements_skipped() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><EncodingType>url</EncodingType><Name>clary-b</Name><Prefix>d/</Prefix><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated><Contents><Key>d%2Fa%20b%2Bc%26.txt</Key><LastModified>2026-11-29T04:03:36.805Z</LastModified><ETag>&quot;9dd4e461268c8034f5c8564e155c67a6&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass><Owner><ID>clary</ID><DisplayName>clary</DisplayName></Owner><Type>Normal</Type></Contents><CommonPrefixes><Prefix>d/sub/</Prefix></CommonPrefixes><NextContinuationToken>d/sub/</NextContinuationToken><KeyCount>2</KeyCount></ListBucketResult>"#;
        let o = list_objects_v2(xml).unwrap();
        assert_eq!(o.name.as_deref(), Some("clary-b"));
        assert_eq!(o.prefix.as_deref(), Some("d/"));
        assert_eq!(o.delimiter.as_deref(), Some("/"));
        assert_eq!((o.max_keys, o.key_count), (Some(2), Some(2)));
        assert_eq!(o.is_truncated, Some(true));
        assert_eq!(o.next_continuation_token.as_deref(), Some("d/sub/"));
        assert_eq!(o.encoding_type.as_ref().map(|e| e.as_str()), Some("url"));
        let c = &o.contents.as_ref().unwrap()[0];
        assert_eq!(c.key.as_deref(), Some("d%2Fa%20b%2Bc%26.txt"));
        assert_eq!(c.size, Some(1));
        assert_eq!(
            c.e_tag,
            Some(ETag::Strong("9dd4e461268c8034f5c8564e155c67a6".into()))
        );
        assert!(c.last_modified.is_some());
        assert_eq!(c.owner, None);
        assert_eq!(
            c.storage_class.as_ref().map(|s| s.as_str()),
            Some("STANDARD")
        );
        let p = o.common_prefixes.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].prefix.as_deref(), Some("d/sub/"));
        // The listing's own <Prefix> is not taken for a common prefix, nor the reverse.
        assert_eq!(o.contents.unwrap().len(), 1);
    }

    #[test]
    fn a_v1_listing_keeps_its_markers() {
        let xml = "<ListBucketResult><Name>p-b</Name><Prefix></Prefix><Marker>a</Marker><NextMarker>c/</NextMarker><MaxKeys>1</MaxKeys><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><Size>3</Size></Contents></ListBucketResult>";
        let o = list_objects(xml).unwrap();
        assert_eq!(o.prefix.as_deref(), Some(""));
        assert_eq!(o.marker.as_deref(), Some("a"));
        assert_eq!(o.next_marker.as_deref(), Some("c/"));
        assert_eq!(o.contents.unwrap()[0].key.as_deref(), Some("a&b"));
        assert!(list_objects("<Error><Code>NoSuchBucket</Code></Error>").is_err());
        assert!(list_objects("not xml <").is_err());
    }

    #[test]
    fn buckets_location_and_upload_answers_read() {
        let xml = r#"<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>clary</ID></Owner><Buckets><Bucket><Name>clary-a</Name><CreationDate>2026-11-29T04:03:11.922Z</CreationDate></Bucket><Bucket><Name>other</Name><CreationDate>2026-11-29T04:03:36.732Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>"#;
        let b = buckets(xml).unwrap();
        let names: Vec<_> = b.iter().map(|b| b.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["clary-a", "other"]);
        assert!(b[0].creation_date.is_some());
        assert_eq!(
            location(r#"<LocationConstraint xmlns="x">default</LocationConstraint>"#).unwrap(),
            Some("default".into())
        );
        assert_eq!(location("<LocationConstraint/>").unwrap(), None);
        let xml = r#"<InitiateMultipartUploadResult><Bucket>probe-a</Bucket><Key>mp</Key><UploadId>2~vrNm7dJ_Qw</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(upload_id(xml).unwrap(), "2~vrNm7dJ_Qw");
        assert!(upload_id("<InitiateMultipartUploadResult/>").is_err());
    }

    #[test]
    fn parts_uploads_completion_copy_and_delete_answers_read() {
        let xml = r#"<ListPartsResult><Bucket>p-b</Bucket><Key>mp</Key><UploadId>u1</UploadId><StorageClass>STANDARD</StorageClass><PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated><Owner><ID></ID></Owner><Part><LastModified>2026-11-29T04:03:37.044Z</LastModified><PartNumber>1</PartNumber><ETag>&quot;33&quot;</ETag><Size>10</Size></Part><Part><PartNumber>2</PartNumber><ETag>"44"</ETag><Size>5</Size><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part></ListPartsResult>"#;
        let o = list_parts(xml).unwrap();
        let parts = o.parts.unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].part_number, Some(1));
        assert_eq!(parts[1].e_tag, Some(ETag::Strong("44".into())));
        assert_eq!(parts[1].checksum_crc32.as_deref(), Some("AAAAAA=="));
        assert_eq!(o.next_part_number_marker, Some(2));
        assert_eq!(o.is_truncated, Some(true));

        let xml = r#"<ListMultipartUploadsResult><Bucket>p-b</Bucket><NextKeyMarker>mp</NextKeyMarker><NextUploadIdMarker>u1</NextUploadIdMarker><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated><Upload><Key>mp</Key><UploadId>u1</UploadId><Initiator><ID>clary</ID></Initiator><StorageClass>STANDARD</StorageClass><Initiated>2026-11-29T04:03:36.975Z</Initiated></Upload><CommonPrefixes><Prefix>x/</Prefix></CommonPrefixes></ListMultipartUploadsResult>"#;
        let o = list_uploads(xml).unwrap();
        let u = &o.uploads.as_ref().unwrap()[0];
        assert_eq!(
            (u.key.as_deref(), u.upload_id.as_deref()),
            (Some("mp"), Some("u1"))
        );
        assert!(u.initiated.is_some());
        assert_eq!(o.common_prefixes.unwrap()[0].prefix.as_deref(), Some("x/"));
        assert_eq!(o.next_key_marker.as_deref(), Some("mp"));

        // Ceph RGW pacific completes with an empty ETag.
        let xml = r#"<CompleteMultipartUploadResult><Location>http://127.0.0.1:7481/p-b/mp3</Location><Bucket>p-b</Bucket><Key>mp3</Key><ETag></ETag></CompleteMultipartUploadResult>"#;
        let o = completed(xml).unwrap();
        assert_eq!(o.e_tag, None);
        assert_eq!(o.key.as_deref(), Some("mp3"));
        let o = completed(
            "<CompleteMultipartUploadResult><ETag>\"abc-4\"</ETag></CompleteMultipartUploadResult>",
        )
        .unwrap();
        assert_eq!(o.e_tag, Some(ETag::Strong("abc-4".into())));

        let xml = "<CopyObjectResult><LastModified>2026-11-29T04:03:36.920Z</LastModified><ETag>5d41</ETag></CopyObjectResult>";
        let r = copy_result(xml).unwrap();
        assert_eq!(r.e_tag, Some(ETag::Strong("5d41".into())));
        assert!(r.last_modified.is_some());

        let xml = "<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b</Key><Code>AccessDenied</Code><Message>no</Message></Error><Deleted><Key>c</Key><DeleteMarker>true</DeleteMarker></Deleted></DeleteResult>";
        let o = deleted(xml).unwrap();
        let d = o.deleted.unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].delete_marker, Some(true));
        let e = &o.errors.unwrap()[0];
        assert_eq!(
            (e.key.as_deref(), e.code.as_deref(), e.message.as_deref()),
            (Some("b"), Some("AccessDenied"), Some("no"))
        );
    }

    #[test]
    fn a_200_that_carries_an_error_is_recognised() {
        assert_eq!(
            root("<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code></Error>").as_deref(),
            Some("Error")
        );
        assert_eq!(
            root("<CopyObjectResult/>").as_deref(),
            Some("CopyObjectResult")
        );
        assert_eq!(root(""), None);
    }

    #[test]
    fn request_bodies_carry_what_the_client_sent() {
        let delete = Delete {
            objects: vec![
                ObjectIdentifier {
                    key: "a&b <c>".into(),
                    ..Default::default()
                },
                ObjectIdentifier {
                    key: "d".into(),
                    ..Default::default()
                },
            ],
            quiet: Some(true),
        };
        let xml = String::from_utf8(delete_body(&delete)).unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(
            xml.contains(&format!("<Delete xmlns=\"{XMLNS}\">")),
            "{xml}"
        );
        let mut keys = Vec::new();
        let mut quiet = None;
        walk_xml(&xml, |path, text| match path {
            ["Delete", "Object", "Key"] => keys.push(text),
            ["Delete", "Quiet"] => quiet = Some(text),
            _ => {}
        })
        .unwrap();
        assert_eq!(keys, ["a&b <c>", "d"]);
        assert_eq!(quiet.as_deref(), Some("true"));

        let upload = CompletedMultipartUpload {
            parts: Some(vec![CompletedPart {
                part_number: Some(1),
                e_tag: Some(ETag::Strong("abc".into())),
                checksum_crc32: Some("AAAAAA==".into()),
                ..Default::default()
            }]),
        };
        let xml = String::from_utf8(complete_body(&upload)).unwrap();
        let mut seen = Vec::new();
        walk_xml(&xml, |path, text| {
            if path.len() == 3 {
                seen.push(format!("{}={text}", path[2]));
            }
        })
        .unwrap();
        assert_eq!(
            seen,
            ["ChecksumCRC32=AAAAAA==", "ETag=\"abc\"", "PartNumber=1"]
        );
    }
}
