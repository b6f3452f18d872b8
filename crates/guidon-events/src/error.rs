/// What the event store can answer instead of a result.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("unsupported events database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// An experiment event the store cannot take; nothing of its batch
    /// was stored.
    #[error("event {index}: {message}")]
    InvalidEvent { index: usize, message: String },
    /// Experiment results asked for with an unusable parameter.
    #[error("{0}")]
    InvalidQuery(String),
    /// The writer task is gone (its runtime stopped) or answered nothing.
    #[error("the event writer stopped")]
    WriterGone,
    #[error("events database error: {0}")]
    Database(#[from] sqlx::Error),
}
