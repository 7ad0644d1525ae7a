//! Names of conflict copies: see [`fybrk_store::naming`] (the filesystem names them too, when
//! a file open for writing is changed by a peer).

pub use fybrk_store::naming::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceId;

    #[test]
    fn device_tag_is_the_first_display_group() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let id = DeviceId::from_bytes(bytes);
        assert_eq!(device_tag(id.short()), id.abbrev());
    }
}
