//! Reading the files a boot takes: the kernel image and the `-initrd` modules.
//!
//! Every file is checked before it is read: anything but a regular file (a directory, a
//! device such as /dev/zero that never ends, a FIFO that would block) is refused at once,
//! and so is a file that cannot fit into guest RAM, so a sparse giant costs neither its size
//! in memory nor seconds of reading. An ELF kernel larger than RAM is read only up to the
//! end of what its program headers describe: a debug `vmlinux` (Debian's is ~560 MiB) loads
//! ~50 MiB at its start and carries its symbols after.

use super::CliError;
use crate::boot;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// What a file is for, in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// The kernel image (`-kernel`, or the native form's KERNEL).
    Kernel,
    /// One `-initrd` item.
    Module,
}

impl std::fmt::Display for FileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileRole::Kernel => "kernel",
            FileRole::Module => "initrd file",
        })
    }
}

/// Opens `path` for a `role` file, refusing what is not a regular file. The path is
/// `stat`ed before it is opened, so a device is never opened at all (opening some has side
/// effects); it is opened with `O_NONBLOCK`, so a FIFO swapped in meanwhile cannot block the
/// open, and the opened descriptor is checked again with `fstat`, so what is read is what
/// was checked. Returns the file and its size.
fn open_regular(path: &Path, role: FileRole) -> Result<(File, u64), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |e| CliError::ReadFile(role, path.to_path_buf(), e);
    let check = |meta: &std::fs::Metadata| match not_a_file(&meta.file_type()) {
        Some(kind) => Err(CliError::NotAFile(role, path.to_path_buf(), kind)),
        None => Ok(meta.len()),
    };
    check(&std::fs::metadata(path).map_err(io_err)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let len = check(&file.metadata().map_err(io_err)?)?;
    Ok((file, len))
}

fn too_large(role: FileRole, path: &Path, size: u64, ram: u64) -> CliError {
    CliError::TooLarge {
        role,
        path: path.to_path_buf(),
        size,
        elf_part: false,
        ram: ram >> 20,
    }
}

/// Reads the kernel file at `path` for a machine with `ram` bytes of RAM (see the module
/// documentation). The first [`boot::PREFIX_LEN`] bytes tell whether this can be a kernel
/// at all, so a file of anything else is refused before the rest is read. The read stops
/// one byte past `ram` whatever happens to the file while it is read.
pub fn read_kernel(path: &Path, ram: u64) -> Result<Vec<u8>, CliError> {
    let role = FileRole::Kernel;
    let io_err = |e| CliError::ReadFile(role, path.to_path_buf(), e);
    let (file, len) = open_regular(path, role)?;
    let mut image = Vec::new();
    let mut file = file.take(ram + 1);
    (&mut file)
        .take(boot::PREFIX_LEN as u64)
        .read_to_end(&mut image)
        .map_err(io_err)?;
    if len <= ram {
        boot::check_prefix(&image).map_err(|e| CliError::Boot(path.to_path_buf(), e))?;
        file.read_to_end(&mut image).map_err(io_err)?;
        if image.len() as u64 > ram {
            // The file grew past RAM while we read it.
            return Err(too_large(role, path, image.len() as u64, ram));
        }
        return Ok(image);
    }
    // Only an ELF file says which part of it is loaded; anything else must fit whole.
    let end = match elf_described_end(file.get_mut(), &image) {
        Some(end) if end <= ram => end,
        Some(end) => {
            return Err(CliError::TooLarge {
                role,
                path: path.to_path_buf(),
                size: end,
                elf_part: true,
                ram: ram >> 20,
            });
        }
        None => return Err(too_large(role, path, len, ram)),
    };
    log::info!(
        "{}: reading the first {end} of its {len} bytes (the rest is not loaded)",
        path.display()
    );
    let rest = end.saturating_sub(image.len() as u64);
    image.reserve(usize::try_from(rest).unwrap_or(0));
    file.take(rest).read_to_end(&mut image).map_err(io_err)?;
    Ok(image)
}

/// The end of the part of an ELF file its headers describe: the ELF header, the program
/// headers and every segment's file range. `prefix` is the file's start; the program
/// headers are read from `file` at their offset. `None` when the file is not an ELF file
/// or its headers do not add up (the boot layer then reports what is wrong).
fn elf_described_end(file: &mut File, prefix: &[u8]) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    /// ELFCLASS64 (gABI, e_ident[EI_CLASS]).
    const ELFCLASS64: u8 = 2;
    if !prefix.starts_with(b"\x7fELF") {
        return None;
    }
    let is_64 = *prefix.get(4)? == ELFCLASS64;
    let u16_at = |o: usize| {
        Some(u64::from(u16::from_le_bytes(
            prefix.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    let word = |b: &[u8], o: usize| -> Option<u64> {
        if is_64 {
            Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
        } else {
            Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?).into())
        }
    };
    // Field offsets of Elf64_Ehdr / Elf32_Ehdr and Elf64_Phdr / Elf32_Phdr (gABI ch. 4, 5).
    let (ehsize, phoff, phentsize, phnum) = if is_64 {
        (64, word(prefix, 32)?, u16_at(54)?, u16_at(56)?)
    } else {
        (52, word(prefix, 28)?, u16_at(42)?, u16_at(44)?)
    };
    let (off_at, filesz_at, entry_size) = if is_64 { (8, 32, 56) } else { (4, 16, 32) };
    // Any other entry size is a corrupt header; this also bounds the table at 64 Ki entries.
    if phentsize != entry_size {
        return None;
    }
    let table_len = phentsize.checked_mul(phnum)?;
    let mut table = vec![0u8; usize::try_from(table_len).ok()?];
    file.read_exact_at(&mut table, phoff).ok()?;
    let mut end = phoff.checked_add(table_len)?.max(ehsize);
    for ph in table.chunks_exact(usize::try_from(phentsize).ok()?) {
        let seg_end = word(ph, off_at)?.checked_add(word(ph, filesz_at)?)?;
        end = end.max(seg_end);
    }
    Some(end.max(boot::PREFIX_LEN as u64))
}

/// One `-initrd` item: a file and the command line the kernel sees for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec {
    /// The file.
    pub path: std::path::PathBuf,
    /// The module's command line: the item as written, path first (Multiboot passes it
    /// whole, as QEMU does).
    pub cmdline: String,
}

/// Splits an `-initrd` value by QEMU's convention: items separated by commas (`,,` is a
/// literal comma), each a file name optionally followed by a space and its arguments
/// (`"mod1 args,mod2"`). Empty items are refused.
pub fn parse_initrd(value: &str) -> Result<Vec<ModuleSpec>, String> {
    let mut items = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                items.last_mut().expect("never empty").push(',');
            }
            ',' => items.push(String::new()),
            c => items.last_mut().expect("never empty").push(c),
        }
    }
    items
        .into_iter()
        .map(|item| {
            let path = item.split(' ').next().unwrap_or("");
            if path.is_empty() {
                return Err(format!(
                    "invalid -initrd {value:?}: an empty item (expected \"FILE[ ARGS][,FILE2[ ARGS]]\")"
                ));
            }
            Ok(ModuleSpec {
                path: path.into(),
                cmdline: item.clone(),
            })
        })
        .collect()
}

/// Reads every module in `specs` for a machine with `ram` bytes of RAM: each must be a
/// regular file that fits into RAM (all of them together too).
pub fn read_modules(specs: &[ModuleSpec], ram: u64) -> Result<Vec<boot::Module>, CliError> {
    let mut total = 0u64;
    let mut modules = Vec::with_capacity(specs.len());
    for spec in specs {
        let role = FileRole::Module;
        let path = spec.path.as_path();
        let (file, len) = open_regular(path, role)?;
        total = total.saturating_add(len);
        if total > ram {
            return Err(too_large(role, path, len, ram));
        }
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(ram - (total - len) + 1)
            .read_to_end(&mut data)
            .map_err(|e| CliError::ReadFile(role, path.to_path_buf(), e))?;
        if data.len() as u64 > len {
            // The file grew while we read it: what was checked is no longer what is read.
            return Err(too_large(role, path, data.len() as u64, ram));
        }
        modules.push(boot::Module {
            cmdline: spec.cmdline.clone(),
            data,
        });
    }
    Ok(modules)
}

/// What a non-regular file is, for the error message; None for a regular file.
fn not_a_file(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a file of an unknown kind"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, cmdline: &str) -> ModuleSpec {
        ModuleSpec {
            path: path.into(),
            cmdline: cmdline.into(),
        }
    }

    #[test]
    fn initrd_items_follow_qemu() {
        assert_eq!(parse_initrd("a.cpio"), Ok(vec![spec("a.cpio", "a.cpio")]));
        assert_eq!(
            parse_initrd("mod1 arg1 arg2,mod2"),
            Ok(vec![spec("mod1", "mod1 arg1 arg2"), spec("mod2", "mod2")])
        );
        // ",," is a literal comma, in a path or in the arguments.
        assert_eq!(
            parse_initrd("a,,b x=1,,2,c"),
            Ok(vec![spec("a,b", "a,b x=1,2"), spec("c", "c")])
        );
        for bad in ["", ",a", "a,", "a,,,", " args"] {
            assert!(parse_initrd(bad).is_err(), "{bad:?}");
        }
    }
}
