pub mod elasticsearch;
