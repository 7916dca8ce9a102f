//! Batch import and export of members as JSON lines or CSV, shared by the HTTP API
//! (`POST /members/import`, `GET /members/export`) and the CLI (`coalition members …`).
//!
//! An import is idempotent per row by phone: a phone that is already registered (earlier in the
//! file, by an earlier import, or at a counter) is skipped, never overwritten, so re-running an
//! interrupted import finishes it. Rows are inserted in batches, each in its own transaction,
//! with one multi-row `INSERT … ON CONFLICT (phone) DO NOTHING RETURNING id` per batch.
//!
//! Columns (JSON keys or CSV headers): `phone`, `name`, `birthday`, `email`, `tags` (a JSON
//! array, or `;`-separated in CSV). Other columns are ignored, so an export imports as-is;
//! ids, tiers and statuses are never imported.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Member, NewMember};
use crate::foundation::store::Store;

/// Rows per insert transaction: short enough to let other writers in between on SQLite, and
/// 500 × 7 bound parameters stays far below both engines' limits.
pub const IMPORT_BATCH_ROWS: usize = 500;
/// Tag rows per insert statement (3 parameters each).
const TAG_BATCH_ROWS: usize = 1_000;
/// Rows one HTTP import may carry, so it finishes within the request timeout; the CLI, which
/// has no timeout, imports files of any length.
pub const MAX_IMPORT_ROWS_PER_REQUEST: usize = 50_000;
/// Row errors reported in full; the count of failures is always exact.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Longest JSON line; a member row is a few hundred bytes, so longer lines are not rows.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Members read per round trip while exporting.
pub const EXPORT_PAGE_SIZE: u32 = 1_000;

/// A file format for import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

impl Format {
    /// Parses `jsonl`/`ndjson`/`csv`.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// Guesses the format from a file name's extension.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Format::parse)
    }

    /// Guesses the format from a `Content-Type` header value.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "text/csv" => Some(Format::Csv),
            "application/x-ndjson"
            | "application/jsonl"
            | "application/json-lines"
            | "application/ndjson"
            | "application/json" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// The `Content-Type` of an export in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }

    /// The file extension of this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// A row that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    /// Line number in the input (1-based; a CSV header is line 1).
    pub line: u64,
    /// Stable code, e.g. `invalid_phone`, `malformed_row`.
    pub code: String,
    /// What is wrong.
    pub detail: String,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Non-blank rows read.
    pub rows: u64,
    /// Members created.
    pub created: u64,
    /// Rows whose phone was already registered (or repeated in the file).
    pub skipped: u64,
    /// Rows refused; see `errors`.
    pub failed: u64,
    /// The first failures (at most 100).
    pub errors: Vec<RowError>,
    /// Whether more rows failed than `errors` lists.
    pub errors_truncated: bool,
}

impl ImportReport {
    fn fail(&mut self, err: RowError) {
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(err);
        } else {
            self.errors_truncated = true;
        }
    }
}

/// Why an import stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be read.
    #[error("while reading the input: {0}")]
    Io(#[from] std::io::Error),
    /// The input is not in the expected shape as a whole (e.g. a CSV without a phone column).
    #[error("{0}")]
    Format(String),
    /// The database refused a batch.
    #[error("while writing a batch of members: {0}")]
    Db(#[from] sqlx::Error),
}

/// A JSON line; unknown keys (an export's `id`, `tier`, …) are ignored.
#[derive(Debug, Deserialize)]
struct JsonRow {
    phone: String,
    name: String,
    #[serde(default)]
    birthday: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// A CSV record; tags are `;`-separated.
#[derive(Debug, Deserialize)]
struct CsvRow {
    phone: String,
    name: String,
    #[serde(default)]
    birthday: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    tags: Option<String>,
}

enum Source<R> {
    Jsonl {
        reader: R,
        line: u64,
        buf: Vec<u8>,
    },
    Csv {
        reader: csv::Reader<R>,
        headers: csv::StringRecord,
        record: csv::StringRecord,
    },
}

/// One row read: its line number and the validated member, or why it is refused.
pub type Row = (u64, Result<NewMember, RowError>);

/// Reads and validates rows one at a time from JSON lines or CSV.
pub struct RowReader<R> {
    source: Source<R>,
    now_ms: i64,
}

impl<R: BufRead> RowReader<R> {
    /// A reader of `format` over `input`; `now_ms` bounds birthdays. Fails if a CSV header
    /// lacks the `phone` or `name` column.
    pub fn new(format: Format, input: R, now_ms: i64) -> Result<Self, ImportError> {
        let source = match format {
            Format::Jsonl => Source::Jsonl {
                reader: input,
                line: 0,
                buf: Vec::new(),
            },
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .trim(csv::Trim::All)
                    .from_reader(input);
                let headers = reader.headers().map_err(csv_fatal)?.clone();
                for required in ["phone", "name"] {
                    if !headers.iter().any(|h| h == required) {
                        return Err(ImportError::Format(format!(
                            "the CSV header must name a {required:?} column; found {:?}",
                            headers.iter().collect::<Vec<_>>()
                        )));
                    }
                }
                Source::Csv {
                    reader,
                    headers,
                    record: csv::StringRecord::new(),
                }
            }
        };
        Ok(Self { source, now_ms })
    }

    /// The next non-blank row: its line number and the validated member, or why it is refused.
    /// `Ok(None)` at the end of the input.
    pub fn next_row(&mut self) -> Result<Option<Row>, ImportError> {
        let now_ms = self.now_ms;
        match &mut self.source {
            Source::Jsonl { reader, line, buf } => loop {
                buf.clear();
                let read = reader
                    .by_ref()
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', buf)?;
                if read == 0 {
                    return Ok(None);
                }
                *line += 1;
                if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
                    skip_rest_of_line(reader)?;
                    return Ok(Some((
                        *line,
                        Err(RowError {
                            line: *line,
                            code: "line_too_long".to_owned(),
                            detail: format!("a line may be at most {MAX_LINE_BYTES} bytes"),
                        }),
                    )));
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let row = serde_json::from_slice::<JsonRow>(buf)
                    .map_err(|err| RowError {
                        line: *line,
                        code: "malformed_row".to_owned(),
                        detail: format!("not a member JSON object: {err}"),
                    })
                    .and_then(|row| {
                        validate_row(
                            *line,
                            &row.phone,
                            &row.name,
                            row.birthday.as_deref(),
                            row.email.as_deref(),
                            &row.tags,
                            now_ms,
                        )
                    });
                return Ok(Some((*line, row)));
            },
            Source::Csv {
                reader,
                headers,
                record,
            } => loop {
                let more = match reader.read_record(record) {
                    Ok(more) => more,
                    Err(err) if err.is_io_error() => return Err(csv_fatal(err)),
                    Err(err) => {
                        let line = err.position().map_or(0, csv::Position::line);
                        return Ok(Some((
                            line,
                            Err(RowError {
                                line,
                                code: "malformed_row".to_owned(),
                                detail: format!("unreadable CSV record: {err}"),
                            }),
                        )));
                    }
                };
                if !more {
                    return Ok(None);
                }
                if record.iter().all(str::is_empty) {
                    continue;
                }
                let line = record.position().map_or(0, csv::Position::line);
                let row = record
                    .deserialize::<CsvRow>(Some(headers))
                    .map_err(|err| RowError {
                        line,
                        code: "malformed_row".to_owned(),
                        detail: format!("not a member record: {err}"),
                    })
                    .and_then(|row| {
                        let tags: Vec<String> = row
                            .tags
                            .as_deref()
                            .unwrap_or_default()
                            .split(';')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned)
                            .collect();
                        validate_row(
                            line,
                            &row.phone,
                            &row.name,
                            row.birthday.as_deref(),
                            row.email.as_deref(),
                            &tags,
                            now_ms,
                        )
                    });
                return Ok(Some((line, row)));
            },
        }
    }
}

fn validate_row(
    line: u64,
    phone: &str,
    name: &str,
    birthday: Option<&str>,
    email: Option<&str>,
    tags: &[String],
    now_ms: i64,
) -> Result<NewMember, RowError> {
    NewMember::validate(phone, name, birthday, email, tags, now_ms).map_err(|err| RowError {
        line,
        code: err.code.to_owned(),
        detail: err.to_string(),
    })
}

fn csv_fatal(err: csv::Error) -> ImportError {
    if err.is_io_error() {
        match err.into_kind() {
            csv::ErrorKind::Io(io) => ImportError::Io(io),
            other => ImportError::Format(format!("{other:?}")),
        }
    } else {
        ImportError::Format(format!("unreadable CSV: {err}"))
    }
}

fn skip_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
}

/// Imports every row of `rows`, batch by batch, calling `on_batch` after each batch (the CLI
/// updates its progress bar there). `max_rows` refuses inputs with more rows than that.
pub async fn import<R: BufRead>(
    store: &Store,
    rows: &mut RowReader<R>,
    now_ms: i64,
    max_rows: Option<usize>,
    mut on_batch: impl FnMut(&ImportReport),
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut batch: Vec<(u64, NewMember)> = Vec::with_capacity(IMPORT_BATCH_ROWS);
    loop {
        let next = rows.next_row()?;
        let done = next.is_none();
        if let Some((line, row)) = next {
            report.rows += 1;
            if max_rows.is_some_and(|max| report.rows > max as u64) {
                return Err(ImportError::Format(format!(
                    "an import may carry at most {} rows; split the file or use the CLI",
                    max_rows.unwrap_or_default()
                )));
            }
            match row {
                Ok(member) => batch.push((line, member)),
                Err(err) => report.fail(err),
            }
        }
        if batch.len() >= IMPORT_BATCH_ROWS || (done && !batch.is_empty()) {
            insert_batch(store, &batch, now_ms, &mut report).await?;
            batch.clear();
            on_batch(&report);
        }
        if done {
            return Ok(report);
        }
    }
}

/// Inserts one batch in one transaction, counting created and skipped rows.
async fn insert_batch(
    store: &Store,
    batch: &[(u64, NewMember)],
    now_ms: i64,
    report: &mut ImportReport,
) -> Result<(), sqlx::Error> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(batch.len());
    let mut fresh: Vec<(String, &NewMember)> = Vec::with_capacity(batch.len());
    for (_, member) in batch {
        if seen.insert(member.phone.as_str()) {
            fresh.push((crate::foundation::store::new_id(), member));
        } else {
            report.skipped += 1;
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    const COLUMNS: usize = 7;
    let values: Vec<String> = (0..fresh.len())
        .map(|i| format!("({})", super::placeholders(i * COLUMNS + 1, COLUMNS)))
        .collect();
    let sql = format!(
        "INSERT INTO members (id, phone, name, birthday, email, created_at, updated_at)
         VALUES {} ON CONFLICT (phone) DO NOTHING RETURNING id",
        values.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String,)>(&sql);
    for (id, m) in &fresh {
        query = query
            .bind(id.clone())
            .bind(m.phone.clone())
            .bind(m.name.clone())
            .bind(m.birthday.clone())
            .bind(m.email.clone())
            .bind(now_ms)
            .bind(now_ms);
    }
    let mut tx = store.begin().await?;
    let created: HashSet<String> = query
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    let tag_rows: Vec<(&str, &str)> = fresh
        .iter()
        .filter(|(id, _)| created.contains(id))
        .flat_map(|(id, m)| m.tags.iter().map(move |t| (id.as_str(), t.as_str())))
        .collect();
    for chunk in tag_rows.chunks(TAG_BATCH_ROWS) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", super::placeholders(i * 3 + 1, 3)))
            .collect();
        let sql = format!(
            "INSERT INTO member_tags (member_id, tag, created_at) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (id, tag) in chunk {
            query = query.bind(*id).bind(*tag).bind(now_ms);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    report.created += created.len() as u64;
    report.skipped += (fresh.len() - created.len()) as u64;
    Ok(())
}

/// A member as exported: the import columns plus what an import ignores.
#[derive(Debug, Serialize)]
struct ExportRow<'a> {
    id: &'a str,
    phone: &'a str,
    name: &'a str,
    birthday: Option<&'a str>,
    email: Option<&'a str>,
    tags: &'a [String],
    tier: &'a str,
    status: &'a str,
    joined_brand_id: Option<&'a str>,
    created_at_ms: i64,
}

/// Columns of a CSV export, in order.
const CSV_COLUMNS: [&str; 10] = [
    "id",
    "phone",
    "name",
    "birthday",
    "email",
    "tags",
    "tier",
    "status",
    "joined_brand_id",
    "created_at_ms",
];

/// What an export starts with: the CSV header row, nothing for JSON lines.
pub fn export_header(format: Format) -> Vec<u8> {
    match format {
        Format::Jsonl => Vec::new(),
        Format::Csv => csv_line(&CSV_COLUMNS.map(str::to_owned)),
    }
}

/// Members rendered as export lines.
pub fn export_lines(members: &[Member], format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        match format {
            Format::Jsonl => {
                let row = ExportRow {
                    id: &m.id,
                    phone: &m.phone,
                    name: &m.name,
                    birthday: m.birthday.as_deref(),
                    email: m.email.as_deref(),
                    tags: &m.tags,
                    tier: &m.tier,
                    status: &m.status,
                    joined_brand_id: m.joined_brand_id.as_deref(),
                    created_at_ms: m.created_at,
                };
                // Serialising strings and integers cannot fail.
                if serde_json::to_writer(&mut out, &row).is_ok() {
                    out.push(b'\n');
                }
            }
            Format::Csv => out.extend(csv_line(&[
                m.id.clone(),
                m.phone.clone(),
                m.name.clone(),
                m.birthday.clone().unwrap_or_default(),
                m.email.clone().unwrap_or_default(),
                m.tags.join(";"),
                m.tier.clone(),
                m.status.clone(),
                m.joined_brand_id.clone().unwrap_or_default(),
                m.created_at.to_string(),
            ])),
        }
    }
    out
}

fn csv_line(fields: &[String]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(fields);
    writer.into_inner().unwrap_or_default()
}

/// One page of the export, after the member id `after`; the cursor of the next page if any.
pub async fn export_page(
    store: &Store,
    after: Option<String>,
) -> Result<(Vec<Member>, Option<String>), sqlx::Error> {
    let mut conn = store.read().acquire().await?;
    let filter = super::ListFilter {
        after,
        ..Default::default()
    };
    super::list(&mut conn, &filter, EXPORT_PAGE_SIZE).await
}

/// Number of members, for progress bars.
pub async fn count(store: &Store) -> Result<u64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM members")
        .fetch_one(store.read())
        .await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Tally of a report by code, for the CLI's summary.
pub fn errors_by_code(report: &ImportReport) -> HashMap<&str, usize> {
    let mut by_code = HashMap::new();
    for e in &report.errors {
        *by_code.entry(e.code.as_str()).or_insert(0) += 1;
    }
    by_code
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_772_445_600_000;

    fn read_all(format: Format, input: &str) -> Vec<Row> {
        let mut reader = RowReader::new(format, input.as_bytes(), NOW_MS).expect("reader");
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().expect("row") {
            rows.push(row);
        }
        rows
    }

    #[test]
    fn jsonl_rows_with_line_numbers_and_errors() {
        let input =
            "{\"phone\":\"+8613800138000\",\"name\":\"A\",\"tags\":[\"VIP\"],\"id\":\"x\"}\n\
                     \n\
                     not json\n\
                     {\"phone\":\"123\",\"name\":\"B\"}\n";
        let rows = read_all(Format::Jsonl, input);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0, 1);
        let first = rows[0].1.as_ref().expect("valid");
        assert_eq!(first.tags, vec!["vip".to_owned()]);
        assert_eq!(rows[1].0, 3);
        assert_eq!(
            rows[1].1.as_ref().map_err(|e| e.code.as_str()),
            Err("malformed_row")
        );
        assert_eq!(
            rows[2].1.as_ref().map_err(|e| e.code.as_str()),
            Err("invalid_phone")
        );
    }

    #[test]
    fn overlong_json_line_is_one_error_and_reading_continues() {
        let long = format!("{{\"name\":\"{}\"}}\n", "x".repeat(MAX_LINE_BYTES));
        let input = format!("{long}{{\"phone\":\"+8613800138000\",\"name\":\"A\"}}\n");
        let rows = read_all(Format::Jsonl, &input);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].1.as_ref().map_err(|e| e.code.as_str()),
            Err("line_too_long")
        );
        assert_eq!(rows[1].0, 2);
        assert!(rows[1].1.is_ok());
    }

    #[test]
    fn csv_rows_split_tags_and_ignore_extra_columns() {
        let input = "id,phone,name,birthday,email,tags\n\
                     x,+8613800138000,Alice,1990-05-17,,vip; new\n\
                     y,+8613800138001,,,,\n";
        let rows = read_all(Format::Csv, input);
        assert_eq!(rows.len(), 2);
        let first = rows[0].1.as_ref().expect("valid");
        assert_eq!(first.tags, vec!["vip".to_owned(), "new".to_owned()]);
        assert_eq!(first.email, None);
        assert_eq!(rows[1].0, 3);
        assert_eq!(
            rows[1].1.as_ref().map_err(|e| e.code.as_str()),
            Err("invalid_name")
        );
    }

    #[test]
    fn csv_without_phone_column_is_refused() {
        let err = RowReader::new(Format::Csv, "name,email\nA,a@b.co\n".as_bytes(), NOW_MS)
            .err()
            .expect("refused");
        assert!(matches!(err, ImportError::Format(_)));
    }

    #[test]
    fn export_csv_round_trips_through_the_reader() {
        let member = Member {
            id: "0".repeat(32),
            phone: "+8613800138000".to_owned(),
            name: "Wang, \"Xiao\" Ming".to_owned(),
            birthday: Some("1990-05-17".to_owned()),
            email: None,
            status: "active".to_owned(),
            blocked_reason: None,
            tier: "bronze".to_owned(),
            joined_brand_id: None,
            created_at: 1,
            updated_at: 1,
            tags: vec!["vip".to_owned(), "new".to_owned()],
        };
        for format in [Format::Csv, Format::Jsonl] {
            let mut out = export_header(format);
            out.extend(export_lines(std::slice::from_ref(&member), format));
            let text = String::from_utf8(out).expect("utf8");
            let rows = read_all(format, &text);
            assert_eq!(rows.len(), 1, "{format:?}");
            let back = rows[0].1.as_ref().expect("valid");
            assert_eq!(back.name, member.name);
            assert_eq!(back.tags, member.tags);
            assert_eq!(back.birthday, member.birthday);
        }
    }

    #[test]
    fn formats_from_names() {
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_content_type("application/x-ndjson"),
            Some(Format::Jsonl)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
        assert_eq!(
            Format::from_path(std::path::Path::new("members.CSV")),
            Some(Format::Csv)
        );
    }
}
