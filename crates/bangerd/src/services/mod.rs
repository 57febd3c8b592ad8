//! One module per operation.

pub mod daemon_ops;
pub mod image_import;
pub mod image_list;
pub mod kernel_import;
pub mod kernel_list;
pub mod vm_list;
