//! `notifyctl users import`: users from a CSV file, each row checked as the API checks a
//! request (`notify::user_import`).

use std::path::PathBuf;

use clap::Subcommand;
use notify::store::users::UserStore;
use notify::user_import::{ImportError, ImportRow};
use serde_json::json;

use crate::CliError;
use crate::output::{Align, Table};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Imports users from a CSV file with a header row. Columns: user_id (required), email,
    /// phone, locale, timezone, devices ("ios:<token> android:<token>"), push_opt_in,
    /// sms_opt_in, email_opt_in (true/false; empty leaves the preference as it is). Contacts
    /// are replaced as `PUT /v1/users/{id}` does. Bad rows are reported and written nowhere;
    /// good rows are kept, so a fixed file can be imported again. Exits 1 if any row was
    /// rejected.
    Import {
        file: PathBuf,
        /// Rows written at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

/// One reason a row of an import file was rejected.
#[derive(serde::Serialize)]
struct Rejection {
    line: u64,
    user_id: Option<String>,
    field: String,
    reason: String,
}

pub async fn import_users(
    users: &UserStore,
    file: &std::path::Path,
    concurrency: usize,
    json: bool,
) -> Result<(), CliError> {
    use futures::StreamExt;
    let unreadable =
        |error: csv::Error| CliError::ImportFile { path: file.display().to_string(), message: error.to_string() };
    let open = || csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(file).map_err(unreadable);
    // A first pass counts the rows for the progress bar.
    let rows = open()?.records().count();
    let mut reader = open()?;
    let header = reader.headers().map_err(unreadable)?.clone();
    notify::user_import::check_columns(header.iter())
        .map_err(|message| CliError::ImportFile { path: file.display().to_string(), message })?;
    let user_id_column = header.iter().position(|column| column == "user_id");

    let bar = indicatif::ProgressBar::new(rows as u64).with_style(
        indicatif::ProgressStyle::with_template("import [{bar:30}] {pos}/{len} rows ({per_sec}, {eta} left)")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let now = notify::time::now_rfc3339();
    let checked = reader.into_records().map(|record| match record {
        Err(error) => {
            let line = error.position().map(|p| p.line()).unwrap_or_default();
            (line, None, Err(vec![notify::domain::FieldError::new("row", error.to_string())]))
        }
        Ok(record) => {
            let line = record.position().map(|p| p.line()).unwrap_or_default();
            let user_id = user_id_column.and_then(|column| record.get(column)).map(str::to_string);
            let row = record
                .deserialize::<ImportRow>(Some(&header))
                .map_err(|error| vec![notify::domain::FieldError::new("row", error.to_string())])
                .and_then(ImportRow::check);
            (line, user_id, row)
        }
    });
    let mut written = futures::stream::iter(checked)
        .map(|(line, user_id, row)| {
            let now = &now;
            async move {
                let errors = match row {
                    Err(errors) => errors,
                    Ok(user) => match notify::user_import::apply(users, &user, now).await {
                        Ok(()) => vec![],
                        Err(ImportError::Refused(error)) => vec![error],
                        // The SDK already retried; the import is idempotent, so the row can be re-run.
                        Err(ImportError::Dependency(error)) => {
                            vec![notify::domain::FieldError::new("-", format!("{error} (import the row again)"))]
                        }
                    },
                };
                (line, user_id, errors)
            }
        })
        .buffer_unordered(concurrency);
    let (mut imported, mut rejected_rows, mut rejections) = (0, 0, Vec::new());
    while let Some((line, user_id, errors)) = written.next().await {
        bar.inc(1);
        if errors.is_empty() {
            imported += 1;
            continue;
        }
        rejected_rows += 1;
        rejections.extend(errors.into_iter().map(|error| Rejection {
            line,
            user_id: user_id.clone(),
            field: error.field,
            reason: error.message,
        }));
    }
    bar.finish_and_clear();
    rejections.sort_by_key(|rejection| rejection.line);

    if json {
        println!("{}", json!({"imported": imported, "rejected_rows": rejected_rows, "rejections": rejections}));
    } else {
        println!("imported {imported} users; rejected {rejected_rows} rows");
        if !rejections.is_empty() {
            println!();
            let mut table = Table::new(&[
                ("LINE", Align::Right),
                ("USER ID", Align::Left),
                ("FIELD", Align::Left),
                ("REASON", Align::Left),
            ]);
            for rejection in &rejections {
                let user_id = rejection.user_id.as_deref().unwrap_or("-");
                table.row(vec![
                    rejection.line.to_string(),
                    user_id.into(),
                    rejection.field.clone(),
                    rejection.reason.clone(),
                ]);
            }
            table.print();
        }
    }
    if rejected_rows > 0 { Err(CliError::RowsRejected(rejected_rows)) } else { Ok(()) }
}
