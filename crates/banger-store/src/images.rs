//! The `images` table.

use std::path::PathBuf;

use banger_model::image::{Image, ImageSource};
use banger_model::{ByteSize, Id, Name};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Store, StoreError, from_millis, is_foreign_key_violation, map_unique, to_millis};

const COLUMNS: &str = "i.id, i.name, i.kernel_id, k.name, i.rootfs_path, i.work_seed_path, \
                       i.rootfs_size, i.source, i.is_default, i.created_at";
const FROM: &str = "images i LEFT JOIN kernels k ON k.id = i.kernel_id";

impl Store {
    pub fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        let source = serde_json::to_string(&image.source).expect("image sources serialise");
        let conn = self.conn();
        let result = conn.execute(
            "INSERT INTO images (id, name, kernel_id, rootfs_path, work_seed_path, rootfs_size, \
             source, is_default, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
            params![
                image.id.as_str(),
                image.name.as_str(),
                image.kernel_id.as_ref().map(Id::as_str),
                image.rootfs_path.to_string_lossy(),
                image
                    .work_seed_path
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                image.rootfs_size.bytes() as i64,
                source,
                to_millis(image.created_at),
            ],
        );
        match result {
            Ok(_) => {}
            Err(err) if is_foreign_key_violation(&err) => {
                return Err(StoreError::Conflict {
                    what: "the image's kernel does not exist".into(),
                });
            }
            Err(err) => return Err(map_unique(err, "image", image.name.as_str())),
        }
        drop(conn);
        if image.is_default {
            self.set_default_image(&image.id)?;
        }
        Ok(())
    }

    /// Rewrites an image's kernel, files, size, source and time (an image
    /// replaced in place by a newer pull); its id, name and default flag stay.
    pub fn update_image(&self, image: &Image) -> Result<(), StoreError> {
        let source = serde_json::to_string(&image.source).expect("image sources serialise");
        let result = self.conn().execute(
            "UPDATE images SET kernel_id = ?2, rootfs_path = ?3, work_seed_path = ?4, \
             rootfs_size = ?5, source = ?6, created_at = ?7 WHERE id = ?1",
            params![
                image.id.as_str(),
                image.kernel_id.as_ref().map(Id::as_str),
                image.rootfs_path.to_string_lossy(),
                image
                    .work_seed_path
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                image.rootfs_size.bytes() as i64,
                source,
                to_millis(image.created_at),
            ],
        );
        match result {
            Ok(0) => Err(StoreError::Missing {
                kind: "image",
                id: image.id.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(err) if is_foreign_key_violation(&err) => Err(StoreError::Conflict {
                what: "the image's kernel does not exist".into(),
            }),
            Err(err) => Err(err.into()),
        }
    }

    pub fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare(&format!("SELECT {COLUMNS} FROM {FROM} ORDER BY i.name"))?;
        let rows = statement.query_map([], read_row)?;
        rows.map(|row| row?).collect()
    }

    pub fn get_image(&self, id: &Id) -> Result<Option<Image>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM {FROM} WHERE i.id = ?1"),
                [id.as_str()],
                read_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn default_image(&self) -> Result<Option<Image>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM {FROM} WHERE i.is_default = 1"),
                [],
                read_row,
            )
            .optional()?;
        row.transpose()
    }

    /// Makes `id` the one default image.
    pub fn set_default_image(&self, id: &Id) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("UPDATE images SET is_default = 0 WHERE is_default = 1", [])?;
        let changed = tx.execute(
            "UPDATE images SET is_default = 1 WHERE id = ?1",
            [id.as_str()],
        )?;
        if changed == 0 {
            return Err(StoreError::Missing {
                kind: "image",
                id: id.to_string(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes an image; refuses while a VM uses it.
    pub fn delete_image(&self, id: &Id) -> Result<(), StoreError> {
        match self
            .conn()
            .execute("DELETE FROM images WHERE id = ?1", [id.as_str()])
        {
            Ok(0) => Err(StoreError::Missing {
                kind: "image",
                id: id.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(err) if is_foreign_key_violation(&err) => Err(StoreError::Conflict {
                what: "the image is used by VMs; delete them first".into(),
            }),
            Err(err) => Err(err.into()),
        }
    }
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<Image, StoreError>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let kernel_id: Option<String> = row.get(2)?;
    let kernel_name: Option<String> = row.get(3)?;
    let rootfs: String = row.get(4)?;
    let seed: Option<String> = row.get(5)?;
    let size: i64 = row.get(6)?;
    let source: String = row.get(7)?;
    let is_default: bool = row.get(8)?;
    let created: i64 = row.get(9)?;
    Ok((|| {
        Ok(Image {
            id: Id::from_stored(id),
            name: Name::parse(&name).map_err(|err| StoreError::Corrupt {
                what: "image name",
                detail: err.to_string(),
            })?,
            kernel_id: kernel_id.map(Id::from_stored),
            kernel_name,
            rootfs_path: PathBuf::from(rootfs),
            work_seed_path: seed.map(PathBuf::from),
            rootfs_size: ByteSize(size.max(0) as u64),
            source: serde_json::from_str::<ImageSource>(&source).map_err(|err| {
                StoreError::Corrupt {
                    what: "image source",
                    detail: err.to_string(),
                }
            })?,
            is_default,
            created_at: from_millis("image created_at", created)?,
        })
    })())
}
