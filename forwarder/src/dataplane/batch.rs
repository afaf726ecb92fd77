//! Batched map reads and deletes (BPF_MAP_LOOKUP_BATCH / DELETE_BATCH,
//! Linux 5.6), which aya 0.14 does not wrap. Walking a flow table key by
//! key costs two syscalls per entry: at a million flows that is seconds of
//! CPU per sweep, where batches of 4096 take a fraction of one.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use aya::{maps::MapData, Pod};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BATCH: u32 = 4096;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn sys_bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the
    // size we pass; the buffers it points to outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every entry of a hash map.
pub fn dump<K: Pod, V: Pod>(map: &MapData) -> Result<Vec<(K, V)>> {
    Ok(read_from(map, None, usize::MAX)?.0)
}

/// Entries read, and the cursor to continue from (`None`: the map ended).
pub type Batch<K, V> = (Vec<(K, V)>, Option<u64>);

/// Up to about `max` entries of a hash map from `cursor` on (`None`: from
/// the start), read in batches, and the cursor to continue from (`None`:
/// the map ended). The cursor is the kernel's (a bucket index): a walk
/// resumed after the map changed may see an entry twice or miss one
/// inserted behind it, which a sweep can afford.
pub fn read_from<K: Pod, V: Pod>(
    map: &MapData,
    cursor: Option<u64>,
    max: usize,
) -> Result<Batch<K, V>> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut out = Vec::new();
    let mut keys: Vec<K> = Vec::with_capacity(BATCH as usize);
    let mut values: Vec<V> = Vec::with_capacity(BATCH as usize);
    let mut cursor_in = cursor.unwrap_or(0);
    let mut cursor_out = 0u64;
    let mut first = cursor.is_none();
    while out.len() < max {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut cursor_in as *mut u64 as u64
            },
            out_batch: &mut cursor_out as *mut u64 as u64,
            map_fd: fd,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            ..Default::default()
        };
        let r = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(BATCH as usize);
        // SAFETY: the kernel wrote `n` keys and values; K and V are Pod.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(keys.drain(..).zip(values.drain(..)));
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok((out, None)),
            Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH (Linux 5.6 or newer)"),
        }
        cursor_in = cursor_out;
        first = false;
    }
    Ok((out, Some(cursor_in)))
}

/// Deletes `keys` (missing ones are skipped); returns how many went.
pub fn delete<K: Pod>(map: &MapData, keys: &[K]) -> Result<usize> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut deleted = 0;
    for chunk in keys.chunks(BATCH as usize) {
        let mut attr = BatchAttr {
            map_fd: fd,
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            ..Default::default()
        };
        match sys_bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => deleted += attr.count as usize,
            // A key already gone (the kernel stops at it): delete the rest
            // one by one.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                deleted += attr.count as usize;
                for k in &chunk[(attr.count as usize).min(chunk.len())..] {
                    let mut one = BatchAttr {
                        map_fd: fd,
                        keys: k as *const K as u64,
                        count: 1,
                        ..Default::default()
                    };
                    if sys_bpf(BPF_MAP_DELETE_BATCH, &mut one).is_ok() {
                        deleted += 1;
                    }
                }
            }
            Err(e) => return Err(e).context("BPF_MAP_DELETE_BATCH"),
        }
    }
    Ok(deleted)
}
