//! The S3 operations (the `s3s::S3` trait) over the in-memory [`State`]: CreateBucket,
//! HeadBucket, GetBucketLocation, PutObject, HeadObject, GetObject, ListObjectsV2,
//! DeleteObject, CopyObject, Get/Put/DeleteObjectTagging, and multipart uploads (`multipart`). Anything else is answered 501 NotImplemented by s3s.
//!
//! Receives requests already authenticated and parsed by s3s; returns s3s outputs.
//! Invariants: answers look like AWS's — metadata names lower-case, non-ASCII metadata
//! values as one RFC 2047 `=?UTF-8?B?…?=` word, `x-amz-storage-class` on HEAD only when not
//! STANDARD, `Expires` returned verbatim, listing times with milliseconds. Metadata and
//! `Expires` go out as raw response headers (which s3s merges over the output's), because
//! s3s splits long encoded values into several words and reformats `Expires` as a date.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use futures::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput,
    CopyObjectResult, CopySource, CreateBucketInput, CreateBucketOutput,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput,
    DeleteObjectTaggingInput, DeleteObjectTaggingOutput, ETag, EncodingType,
    GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput, GetObjectOutput,
    GetObjectTaggingInput, GetObjectTaggingOutput, HeadBucketInput, HeadBucketOutput,
    HeadObjectInput, HeadObjectOutput, ListObjectsV2Input, ListObjectsV2Output, Metadata,
    MetadataDirective, Object, ObjectStorageClass, PutObjectInput, PutObjectOutput,
    PutObjectTaggingInput, PutObjectTaggingOutput, StorageClass, StreamingBlob, Tag, Timestamp,
    TimestampFormat, UploadPartInput, UploadPartOutput,
};
use s3s::{Body, S3, S3Error, S3Request, S3Response, S3Result, s3_error};

use crate::listing::{self, Entry, ListRequest, MAX_KEYS, Token};
use crate::state::State;
use crate::store::{DEFAULT_CONTENT_TYPE, Details, NoSuchBucket, Obj, md5_hex};

/// The `S3` implementation; cheap to clone.
#[derive(Clone)]
pub(crate) struct Backend {
    pub state: Arc<State>,
}

impl From<NoSuchBucket> for S3Error {
    fn from(_: NoSuchBucket) -> S3Error {
        s3_error!(NoSuchBucket, "The specified bucket does not exist")
    }
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        // As in us-east-1, re-creating a bucket you own succeeds.
        self.state.store.create_bucket(&req.input.bucket);
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self.state.store.bucket_exists(&req.input.bucket) {
            return Err(NoSuchBucket.into());
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        if !self.state.store.bucket_exists(&req.input.bucket) {
            return Err(NoSuchBucket.into());
        }
        // No constraint: us-east-1, as `REGION`.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let mut input = req.input;
        let body = read_body(input.body.take()).await?;
        let etag = md5_hex(&body);
        let size = body.len() as u64;
        let details = Details {
            body: Some(body),
            meta: sorted_meta(input.metadata),
            content_type: input
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            cache_control: input.cache_control,
            content_encoding: input.content_encoding,
            content_language: input.content_language,
            content_disposition: input.content_disposition,
            expires: input.expires.map(|t| http_date(&t)),
            storage_class: input.storage_class.map(|s| s.as_str().to_owned()),
            missing_meta: None,
            tags: Vec::new(),
            headers: Vec::new(),
        };
        let obj = Obj::with_details(size, etag.clone(), details);
        self.state
            .store
            .put(&input.bucket, &input.key, obj, false)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..PutObjectOutput::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        if !self.state.store.bucket_exists(&input.bucket) {
            return Err(NoSuchBucket.into());
        }
        let id = self
            .state
            .uploads
            .create(&input.bucket, &input.key, input.content_type);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let mut input = req.input;
        let body = read_body(input.body.take()).await?;
        let etag = self
            .state
            .uploads
            .part(
                &input.upload_id,
                &input.bucket,
                &input.key,
                input.part_number,
                body,
            )
            .map_err(refusal)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let listed: Vec<(i32, Option<String>)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.part_number.unwrap_or(0), p.e_tag.map(ETag::into_value)))
            .collect();
        let done = self
            .state
            .uploads
            .complete(&input.upload_id, &input.bucket, &input.key, &listed)
            .map_err(refusal)?;
        let details = Details {
            body: Some(done.body.clone()),
            meta: Vec::new(),
            content_type: done
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            cache_control: None,
            content_encoding: None,
            content_language: None,
            content_disposition: None,
            expires: None,
            storage_class: None,
            missing_meta: None,
            tags: Vec::new(),
            headers: Vec::new(),
        };
        let obj = Obj::with_details(done.body.len() as u64, done.etag.clone(), details);
        self.state
            .store
            .put(&input.bucket, &input.key, obj, false)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(done.etag)),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.state
            .uploads
            .abort(&input.upload_id, &input.bucket, &input.key)
            .map_err(refusal)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = &req.input;
        let obj = self.lookup_version(&input.bucket, &input.key, input.version_id.as_deref())?;
        let details = obj.details();
        let output = HeadObjectOutput {
            version_id: input.version_id.clone(),
            ..head_output(&obj, &details)
        };
        let checksums = req.input.checksum_mode.is_some();
        Ok(S3Response::with_headers(
            output,
            raw_headers(&details, checksums),
        ))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let obj = self.lookup(&req.input.bucket, &req.input.key)?;
        let details = obj.details();
        let h = head_output(&obj, &details);
        let output = GetObjectOutput {
            body: Some(StreamingBlob::from(Body::from(obj.body()))),
            cache_control: h.cache_control,
            content_disposition: h.content_disposition,
            content_encoding: h.content_encoding,
            content_language: h.content_language,
            content_length: h.content_length,
            content_type: h.content_type,
            e_tag: h.e_tag,
            last_modified: h.last_modified,
            missing_meta: h.missing_meta,
            storage_class: h.storage_class,
            ..GetObjectOutput::default()
        };
        let checksums = req.input.checksum_mode.is_some();
        Ok(S3Response::with_headers(
            output,
            raw_headers(&details, checksums),
        ))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = &req.input;
        let obj = self.lookup_version(&input.bucket, &input.key, input.version_id.as_deref())?;
        let tag_set = obj
            .details()
            .tags
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect();
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set,
            ..GetObjectTaggingOutput::default()
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let input = req.input;
        let tags = input
            .tagging
            .tag_set
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect();
        if !self.state.store.set_tags(&input.bucket, &input.key, tags)? {
            return Err(s3_error!(NoSuchKey, "The specified key does not exist."));
        }
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let input = req.input;
        if !self
            .state
            .store
            .set_tags(&input.bucket, &input.key, Vec::new())?
        {
            return Err(s3_error!(NoSuchKey, "The specified key does not exist."));
        }
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.list(req.input).map(S3Response::new)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.state.store.delete(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources"));
        };
        let source = self.lookup(bucket, key)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let mut details = source.details().into_owned();
        details.body = Some(source.body());
        if replace {
            details = replaced_details(details, &input);
        }
        if let Some(class) = &input.storage_class {
            details.storage_class = Some(class.as_str().to_owned());
        }
        let etag = source.etag().into_owned();
        let obj = Obj::with_details(source.size, etag.clone(), details);
        let lm = self
            .state
            .store
            .put(&input.bucket, &input.key, obj, false)?;
        let result = CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(lm)),
            ..CopyObjectResult::default()
        };
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            ..CopyObjectOutput::default()
        }))
    }
}

impl Backend {
    /// The object, or with `versionId` that version of it.
    fn lookup_version(&self, bucket: &str, key: &str, version: Option<&str>) -> S3Result<Obj> {
        let Some(id) = version else {
            return self.lookup(bucket, key);
        };
        if !self.state.store.bucket_exists(bucket) {
            return Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            ));
        }
        match self.state.store.version(bucket, key, id) {
            Some(Some(obj)) => Ok(obj),
            Some(None) => Err(s3_error!(
                MethodNotAllowed,
                "The specified method is not allowed against this resource."
            )),
            None => Err(s3_error!(
                NoSuchVersion,
                "The specified version does not exist."
            )),
        }
    }

    fn lookup(&self, bucket: &str, key: &str) -> S3Result<Obj> {
        self.state
            .store
            .get(bucket, key)?
            .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))
    }

    fn list(&self, input: ListObjectsV2Input) -> S3Result<ListObjectsV2Output> {
        let (after, page_no) = match &input.continuation_token {
            // S3 ignores start-after when a token is given.
            Some(t) => {
                let token = Token::decode(t)
                    .filter(|tok| tok.epoch == self.state.token_epoch())
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidArgument,
                            "The continuation token provided is incorrect"
                        )
                    })?;
                (Some(token.marker), token.page + 1)
            }
            None => (input.start_after.clone(), 1),
        };
        let max_keys = match input.max_keys {
            None => MAX_KEYS,
            Some(n) => usize::try_from(n)
                .map_err(|_| s3_error!(InvalidArgument, "max-keys must not be negative"))?
                .min(MAX_KEYS),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let req = ListRequest {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: after.as_deref(),
            max_keys,
            start_after: input.continuation_token.is_none(),
        };
        let by_path = self.state.path_order();
        let page = self.state.store.with_bucket(&input.bucket, |objects| {
            if by_path {
                listing::list_page_by_path(objects, &req)
            } else {
                listing::list_page(objects, &req)
            }
        })?;
        let next = page.last.filter(|_| page.truncated).map(|marker| {
            let epoch = self.state.token_epoch();
            Token {
                epoch,
                page: page_no,
                marker,
            }
            .encode()
        });
        Ok(self.list_output(input, page.entries, page.common_prefixes, next))
    }

    fn list_output(
        &self,
        input: ListObjectsV2Input,
        entries: Vec<Entry>,
        prefixes: Vec<String>,
        next: Option<String>,
    ) -> ListObjectsV2Output {
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { listing::url_encode(&s) } else { s };
        let etags = self.state.listing_etags();
        let key_count = i32::try_from(entries.len() + prefixes.len()).unwrap_or(i32::MAX);
        let contents = entries
            .into_iter()
            .map(|e| Object {
                e_tag: etags.then_some(ETag::Strong(e.etag)),
                key: Some(enc(e.key)),
                last_modified: Some(timestamp(e.last_modified_ms)),
                size: Some(i64::try_from(e.size).unwrap_or(i64::MAX)),
                storage_class: Some(ObjectStorageClass::from(e.storage_class)),
                ..Object::default()
            })
            .collect();
        let common_prefixes: Vec<CommonPrefix> = prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            max_keys: Some(input.max_keys.unwrap_or(1000).min(1000)),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            delimiter: input.delimiter.map(enc),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(enc),
            ..ListObjectsV2Output::default()
        }
    }
}

fn refusal(r: crate::multipart::Refusal) -> S3Error {
    use crate::multipart::Refusal;
    match r {
        Refusal::NoSuchUpload => s3_error!(
            NoSuchUpload,
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        ),
        Refusal::InvalidPart(n) => s3_error!(
            InvalidPart,
            "One or more of the specified parts could not be found (part {n})."
        ),
        Refusal::InvalidPartOrder => s3_error!(
            InvalidPartOrder,
            "The list of parts was not in ascending order."
        ),
    }
}

async fn read_body(body: Option<StreamingBlob>) -> S3Result<bytes::Bytes> {
    let mut buf = BytesMut::new();
    if let Some(mut stream) = body {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3_error!(InternalError, "reading body: {e}"))?;
            buf.extend_from_slice(&chunk);
        }
    }
    Ok(buf.freeze())
}

fn sorted_meta(meta: Option<Metadata>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = meta
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    v.sort();
    v
}

/// CopyObject with `x-amz-metadata-directive: REPLACE`: metadata and content headers come
/// from the request, the body from the source.
fn replaced_details(source: Details, input: &CopyObjectInput) -> Details {
    Details {
        body: source.body,
        meta: sorted_meta(input.metadata.clone()),
        content_type: input
            .content_type
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
        cache_control: input.cache_control.clone(),
        content_encoding: input.content_encoding.clone(),
        content_language: input.content_language.clone(),
        content_disposition: input.content_disposition.clone(),
        expires: input.expires.as_ref().map(http_date),
        storage_class: source.storage_class,
        missing_meta: None,
        tags: source.tags,
        headers: Vec::new(),
    }
}

fn head_output(obj: &Obj, d: &Details) -> HeadObjectOutput {
    let class = obj.storage_class();
    HeadObjectOutput {
        cache_control: d.cache_control.clone(),
        content_disposition: d.content_disposition.clone(),
        content_encoding: d.content_encoding.clone(),
        content_language: d.content_language.clone(),
        content_length: Some(i64::try_from(obj.size).unwrap_or(i64::MAX)),
        content_type: Some(d.content_type.clone()),
        e_tag: Some(ETag::Strong(obj.etag().into_owned())),
        last_modified: Some(timestamp(obj.last_modified_ms)),
        missing_meta: d.missing_meta.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        // AWS omits the header for STANDARD.
        storage_class: (class != StorageClass::STANDARD)
            .then(|| StorageClass::from(class.to_owned())),
        ..HeadObjectOutput::default()
    }
}

/// `x-amz-meta-*` and `Expires` as AWS sends them. Names that are not valid header names
/// (possible only through `State::put_object_with`) are left out.
/// `checksums`: the request asked for them (`x-amz-checksum-mode`); as on AWS, the
/// `x-amz-checksum-*` headers of `ObjectSpec::headers` are sent only then.
fn raw_headers(d: &Details, checksums: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &d.meta {
        let name = HeaderName::try_from(format!("x-amz-meta-{name}"));
        if let (Ok(name), Some(value)) = (name, rfc2047(value)) {
            headers.insert(name, value);
        }
    }
    if let Some(value) = d
        .expires
        .as_deref()
        .and_then(|e| HeaderValue::try_from(e).ok())
    {
        headers.insert(http::header::EXPIRES, value);
    }
    if !d.tags.is_empty() {
        headers.insert("x-amz-tagging-count", HeaderValue::from(d.tags.len()));
    }
    for (name, value) in &d.headers {
        if !checksums && name.starts_with("x-amz-checksum-") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

/// A metadata value as AWS returns it: verbatim when printable ASCII, else a single RFC 2047
/// encoded-word `=?UTF-8?B?<base64>?=` however long.
pub(crate) fn rfc2047(value: &str) -> Option<HeaderValue> {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return HeaderValue::try_from(value).ok();
    }
    let encoded = format!("=?UTF-8?B?{}?=", STANDARD.encode(value));
    HeaderValue::try_from(encoded).ok()
}

pub(crate) fn timestamp(ms: i64) -> Timestamp {
    let since = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    Timestamp::from(UNIX_EPOCH + since)
}

/// `ms` in RFC 3339 with milliseconds (an event's `eventTime`).
pub(crate) fn timestamp_text(ms: i64) -> String {
    let mut buf = Vec::new();
    let _ = timestamp(ms).format(TimestampFormat::DateTime, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn http_date(t: &Timestamp) -> String {
    let mut buf = Vec::new();
    // Formatting a parsed date into a Vec cannot fail.
    let _ = t.format(TimestampFormat::HttpDate, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2047_is_one_word_for_non_ascii_and_verbatim_otherwise() {
        assert_eq!(rfc2047("plain value").unwrap(), "plain value");
        assert_eq!(rfc2047("café").unwrap(), "=?UTF-8?B?Y2Fmw6k=?=");
        let long = "é".repeat(100);
        let v = rfc2047(&long).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("=?UTF-8?B?") && v.ends_with("?=") && !v.contains(' '));
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let mut buf = Vec::new();
        timestamp(1_700_000_000_123)
            .format(TimestampFormat::DateTime, &mut buf)
            .unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "2023-11-14T22:13:20.123Z");
    }
}
