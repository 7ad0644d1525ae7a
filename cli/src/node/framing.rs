//! Pairing frames on a QUIC stream (the encoding is `fybrk_pair`'s).

use anyhow::{bail, Result};
use tokio::io::AsyncWriteExt;

/// Writes one pairing frame.
pub(super) async fn write_frame<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<()> {
    let frame = fybrk_pair::encode_frame(msg)?;
    send.write_all(&frame).await?;
    send.flush().await?;
    Ok(())
}

/// Reads one pairing frame (they are small: at most a few KiB).
pub(super) async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((msg, _)) = fybrk_pair::decode_frame::<T>(&buf)? {
            return Ok(msg);
        }
        match recv.read(&mut chunk).await? {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => bail!("the other device closed the pairing stream early"),
        }
    }
}
