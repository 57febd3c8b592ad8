//! One module per operation.

pub mod daemon_ops;
pub mod doctor;
pub mod image_bootstrap;
pub mod image_import;
pub mod image_list;
pub mod image_pull;
pub mod image_register;
pub mod kernel_bootstrap;
pub mod kernel_import;
pub mod kernel_list;
pub mod vm_create;
pub mod vm_delete;
pub mod vm_info;
pub mod vm_list;
pub mod vm_port_forward;
pub mod vm_ports;
pub mod vm_set;
pub mod vm_start;
pub mod vm_stop;
pub mod vm_workspace;
