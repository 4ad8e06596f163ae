//! Entry points for the fuzz targets under `fuzz/` (the row codec is
//! private). Not part of the API: hidden from the docs, may change anytime.

use tidings_core::{Event, NewEvent};

use crate::codec::{decode_at, Encoded, RawPage, STANDARD};
use crate::error::StorageError;

/// Decodes a row selected as `seq, id, name, source, time, key, data,
/// priority` with both decoders: the direct one and the readers' page.
pub fn decode_row(row: &rusqlite::Row<'_>) -> [Result<Event, StorageError>; 2] {
    let direct = decode_at(row, STANDARD);
    let mut page = RawPage::new(0, 1);
    let paged = page
        .push(row)
        .and_then(|()| page.decode())
        .map(|p| Event::clone(&p.events[0]));
    [direct, paged]
}

/// What the writer stores for `event` at `seq`: the event as it reads back
/// (time truncated to microseconds) and the column values, in the order
/// and types the writer's INSERT binds them.
pub fn encode_row(
    seq: i64,
    event: NewEvent,
) -> Result<(NewEvent, [rusqlite::types::Value; 8]), StorageError> {
    use rusqlite::types::Value;
    let enc = Encoded::new(event)?;
    let values = [
        Value::Integer(seq),
        Value::Blob(enc.event.id.as_bytes().to_vec()),
        Value::Text(enc.event.name.clone()),
        Value::Text(enc.event.source.to_string()),
        Value::Integer(enc.time_us),
        enc.event.key.clone().map_or(Value::Null, Value::Text),
        Value::Text(enc.data),
        enc.priority.map_or(Value::Null, Value::Integer),
    ];
    Ok((enc.event, values))
}
