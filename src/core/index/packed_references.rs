//! A file's references as the index keeps them: packed into bytes, each one its name's id
//! and its start's distance from the previous one's, both as LEB128 varints.
//!
//! A large tree holds millions of references (7.5 million on a Linux kernel), and every
//! reader walks a file's references in order (the uses of a name, the name at an offset,
//! the names a file uses), so they need no random access. Packed, a reference takes about
//! four bytes where an (id, start) pair took eight: ids below 2 million fit in three bytes,
//! and the next use is rarely more than 127 bytes on.

use super::table::NameId;

/// A use of a name: its id and where it starts (it ends a name's length later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredReference {
    pub name: NameId,
    pub start: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedReferences {
    bytes: Box<[u8]>,
    count: u32,
}

impl PackedReferences {
    /// Packs `references`, which are sorted here by start first (extraction makes them in
    /// the order of the text; a damaged cache might not).
    pub fn pack(mut references: Vec<StoredReference>) -> PackedReferences {
        references.sort_by_key(|reference| reference.start);
        let mut bytes = Vec::with_capacity(references.len() * 4);
        let mut previous = 0;
        for reference in &references {
            push_varint(&mut bytes, reference.name.0);
            push_varint(&mut bytes, reference.start - previous);
            previous = reference.start;
        }
        PackedReferences {
            bytes: bytes.into_boxed_slice(),
            count: references.len() as u32,
        }
    }

    /// The references in the order of the text.
    pub fn iter(&self) -> impl Iterator<Item = StoredReference> + '_ {
        let mut at = 0;
        let mut start = 0u32;
        std::iter::from_fn(move || {
            let name = read_varint(&self.bytes, &mut at)?;
            start = start.checked_add(read_varint(&self.bytes, &mut at)?)?;
            Some(StoredReference {
                name: NameId(name),
                start,
            })
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Bytes held on the heap.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }
}

fn push_varint(bytes: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        bytes.push(value as u8 | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

/// The varint at `at`, moving past it; `None` at the end (or on a varint cut short or too
/// long for 32 bits, which `pack` never writes).
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: u32, start: u32) -> StoredReference {
        StoredReference {
            name: NameId(name),
            start,
        }
    }

    /// Ids and gaps of every width, out of order, at the ends of the 32-bit range: they
    /// come back sorted by start and otherwise as they went in.
    #[test]
    fn references_come_back_as_they_went_in() {
        let given = vec![
            reference(0, 0),
            reference(u32::MAX, 5),
            reference(127, 3),
            reference(128, 3),
            reference(2_171_883, 200),
            reference(16_384, 70_000),
            reference(1, u32::MAX),
        ];
        let packed = PackedReferences::pack(given.clone());
        let mut expected = given;
        expected.sort_by_key(|reference| reference.start);
        assert_eq!(packed.iter().collect::<Vec<_>>(), expected);
        assert_eq!(packed.len(), 7);
        let small = PackedReferences::pack(vec![reference(5, 10), reference(90, 40)]);
        assert_eq!(small.bytes(), 4, "a byte each for small ids and gaps");
        assert_eq!(PackedReferences::pack(Vec::new()).len(), 0);
    }

    #[test]
    fn a_varint_cut_short_or_too_long_ends_the_walk() {
        let mut at = 0;
        assert_eq!(read_varint(&[0x80, 0x80], &mut at), None);
        let mut at = 0;
        assert_eq!(read_varint(&[0xff; 6], &mut at), None);
        let mut at = 0;
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f], &mut at),
            Some(u32::MAX)
        );
    }
}
