//! The fronts: one codec per wire format. Each turns its requests into the pipeline's
//! [`Head`](crate::pipeline::Head) and body, and the pipeline's answer or refusal back
//! into its own form. None of them decides anything about a call.

pub mod grpc;
pub mod grpc_wire;
pub mod json;
pub mod jsondata;
pub mod protoscan;
pub mod reflection;
pub mod rest;
pub mod tensor;
pub mod tfs;
pub mod tfs_grpc;
pub mod tfs_json;
pub mod triton;
