//! The seeds' metadata builders (seeds 000-003): reference versions and the seeds'
//! proposed variants. Filled by the builders issue.
