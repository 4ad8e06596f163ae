//! Durable consumers: cursors and definitions.

use super::*;

/// Named cursors: absent, committed, overwritten; bad names and positions
/// past the end are refused.
pub async fn cursors<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    append_n(&*log, 5).await;
    assert_eq!(log.cursor("indexer").await.unwrap(), None);
    log.commit_cursor("indexer", 3).await.unwrap();
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(3));
    log.commit_cursor("indexer", 5).await.unwrap();
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(5));
    assert_eq!(log.cursor("other").await.unwrap(), None);
    assert!(matches!(
        log.commit_cursor("indexer", 6).await,
        Err(CursorError::BeyondEnd { .. })
    ));
    assert!(matches!(
        log.commit_cursor("", 1).await,
        Err(CursorError::InvalidName(_))
    ));
    assert!(matches!(
        log.cursor("a b").await,
        Err(CursorError::InvalidName(_))
    ));
    // Resume from the cursor: at-least-once from the next event.
    let from = log.cursor("indexer").await.unwrap().unwrap_or(0);
    append_n(&*log, 1).await;
    let mut s = stream_from(log.clone(), Position::After(from));
    assert_eq!(next_seq(&mut s).await, 6);
}

/// Consumer definitions: the first definer wins, they are listed with
/// their cursors (and cursors without a definition), and deleting one
/// removes its definition and its cursor.
pub async fn consumer_definitions<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    assert!(log.consumers().await.unwrap().is_empty());
    let first = log
        .define_consumer("timeline", r#"{"patterns":["story.>"]}"#)
        .await
        .unwrap();
    assert_eq!(first, r#"{"patterns":["story.>"]}"#);
    let second = log
        .define_consumer("timeline", r#"{"patterns":["other"]}"#)
        .await
        .unwrap();
    assert_eq!(second, first, "the first definition wins");
    log.append(vec![NewEvent::new("story.a", json!(1)).unwrap()], None)
        .await
        .unwrap();
    log.commit_cursor("timeline", 1).await.unwrap();
    log.commit_cursor("bare", 1).await.unwrap();
    let list = log.consumers().await.unwrap();
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["bare", "timeline"], "sorted by name");
    assert_eq!(list[0].spec, "", "a cursor without a definition");
    assert_eq!(list[0].cursor, Some(1));
    assert_eq!(list[1].spec, first);
    assert_eq!(list[1].cursor, Some(1));
    assert!(log.delete_consumer("timeline").await.unwrap());
    assert!(!log.delete_consumer("timeline").await.unwrap());
    assert_eq!(log.cursor("timeline").await.unwrap(), None);
    assert_eq!(log.consumers().await.unwrap().len(), 1);
    let again = log
        .define_consumer("timeline", r#"{"patterns":["other"]}"#)
        .await
        .unwrap();
    assert_eq!(
        again, r#"{"patterns":["other"]}"#,
        "defined anew after delete"
    );
    assert!(matches!(
        log.define_consumer("bad name", "x").await,
        Err(CursorError::InvalidName(_))
    ));
    assert!(matches!(
        log.delete_consumer("").await,
        Err(CursorError::InvalidName(_))
    ));
}
