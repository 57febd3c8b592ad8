//! The `kernels` table.

use std::path::PathBuf;

use banger_model::kernel::{Kernel, KernelSource};
use banger_model::{Id, Name};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Store, StoreError, from_millis, is_foreign_key_violation, map_unique, to_millis};

const COLUMNS: &str = "id, name, vmlinux_path, initrd_path, version, source, created_at";

impl Store {
    pub fn insert_kernel(&self, kernel: &Kernel) -> Result<(), StoreError> {
        let source = serde_json::to_string(&kernel.source).expect("kernel sources serialise");
        self.conn()
            .execute(
                &format!("INSERT INTO kernels ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    kernel.id.as_str(),
                    kernel.name.as_str(),
                    kernel.vmlinux_path.to_string_lossy(),
                    kernel
                        .initrd_path
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned()),
                    kernel.version,
                    source,
                    to_millis(kernel.created_at),
                ],
            )
            .map_err(|err| map_unique(err, "kernel", kernel.name.as_str()))?;
        Ok(())
    }

    pub fn list_kernels(&self) -> Result<Vec<Kernel>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare(&format!("SELECT {COLUMNS} FROM kernels ORDER BY name"))?;
        let rows = statement.query_map([], read_row)?;
        rows.map(|row| row?).collect()
    }

    pub fn get_kernel(&self, id: &Id) -> Result<Option<Kernel>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM kernels WHERE id = ?1"),
                [id.as_str()],
                read_row,
            )
            .optional()?;
        row.transpose()
    }

    /// Deletes a kernel; refuses while an image uses it.
    pub fn delete_kernel(&self, id: &Id) -> Result<(), StoreError> {
        match self
            .conn()
            .execute("DELETE FROM kernels WHERE id = ?1", [id.as_str()])
        {
            Ok(0) => Err(StoreError::Missing {
                kind: "kernel",
                id: id.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(err) if is_foreign_key_violation(&err) => Err(StoreError::Conflict {
                what: "the kernel is used by an image; delete or re-point the image first".into(),
            }),
            Err(err) => Err(err.into()),
        }
    }
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<Kernel, StoreError>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let vmlinux: String = row.get(2)?;
    let initrd: Option<String> = row.get(3)?;
    let version: Option<String> = row.get(4)?;
    let source: String = row.get(5)?;
    let created: i64 = row.get(6)?;
    Ok((|| {
        Ok(Kernel {
            id: Id::from_stored(id),
            name: Name::parse(&name).map_err(|err| StoreError::Corrupt {
                what: "kernel name",
                detail: err.to_string(),
            })?,
            vmlinux_path: PathBuf::from(vmlinux),
            initrd_path: initrd.map(PathBuf::from),
            version,
            source: serde_json::from_str::<KernelSource>(&source).map_err(|err| {
                StoreError::Corrupt {
                    what: "kernel source",
                    detail: err.to_string(),
                }
            })?,
            created_at: from_millis("kernel created_at", created)?,
        })
    })())
}
