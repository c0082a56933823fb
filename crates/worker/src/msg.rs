//! Dispatch and combine messages: a small binary layout with the rows as a payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use emesh_comm::{decode_rows, encode_rows, CommError, PayloadDtype};

/// One token sent to an expert rank: its index in the group batch and the (slot, expert, weight)
/// triples that rank must compute.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchToken {
    pub token: u32,
    pub items: Vec<(u32, u32, f32)>,
}

fn short(what: &str) -> CommError {
    CommError::Payload(format!("truncated {what} message"))
}

pub fn encode_dispatch(tokens: &[DispatchToken], rows: &[f32], dtype: PayloadDtype) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32_le(tokens.len() as u32);
    for t in tokens {
        b.put_u32_le(t.token);
        b.put_u32_le(t.items.len() as u32);
        for &(s, e, w) in &t.items {
            b.put_u32_le(s);
            b.put_u32_le(e);
            b.put_f32_le(w);
        }
    }
    b.put_slice(&encode_rows(rows, dtype));
    b.freeze()
}

pub fn decode_dispatch(mut b: &[u8], d: usize) -> Result<(Vec<DispatchToken>, Vec<f32>), CommError> {
    if b.is_empty() {
        return Ok((vec![], vec![]));
    }
    if b.remaining() < 4 {
        return Err(short("dispatch"));
    }
    let n = b.get_u32_le() as usize;
    let mut tokens = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        if b.remaining() < 8 {
            return Err(short("dispatch"));
        }
        let token = b.get_u32_le();
        let k = b.get_u32_le() as usize;
        if b.remaining() < k * 12 {
            return Err(short("dispatch"));
        }
        let items = (0..k).map(|_| (b.get_u32_le(), b.get_u32_le(), b.get_f32_le())).collect();
        tokens.push(DispatchToken { token, items });
    }
    let rows = decode_rows(b, n * d)?;
    Ok((tokens, rows))
}

/// `(token, slot)` of each returned row, and the rows.
pub type CombineRows = (Vec<(u32, u32)>, Vec<f32>);

/// Expert outputs returned to a token's owner: `(token, slot)` per row, rows exact.
pub fn encode_combine(items: &[(u32, u32)], rows: &[f32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32_le(items.len() as u32);
    for &(t, s) in items {
        b.put_u32_le(t);
        b.put_u32_le(s);
    }
    b.put_slice(&encode_rows(rows, PayloadDtype::F32));
    b.freeze()
}

pub fn decode_combine(mut b: &[u8], d: usize) -> Result<CombineRows, CommError> {
    if b.is_empty() {
        return Ok((vec![], vec![]));
    }
    if b.remaining() < 4 {
        return Err(short("combine"));
    }
    let n = b.get_u32_le() as usize;
    if b.remaining() < n * 8 {
        return Err(short("combine"));
    }
    let items: Vec<(u32, u32)> = (0..n).map(|_| (b.get_u32_le(), b.get_u32_le())).collect();
    let rows = decode_rows(b, n * d)?;
    Ok((items, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let toks = vec![DispatchToken { token: 3, items: vec![(0, 5, 0.25), (2, 7, 0.5)] }];
        let rows = vec![1.0, 2.0, 3.0];
        let b = encode_dispatch(&toks, &rows, PayloadDtype::F32);
        assert_eq!(decode_dispatch(&b, 3).unwrap(), (toks, rows.clone()));
        assert!(decode_dispatch(&b[..7], 3).is_err());
        assert!(decode_dispatch(&b, 4).is_err());
        let c = encode_combine(&[(3, 0)], &rows);
        assert_eq!(decode_combine(&c, 3).unwrap().0, vec![(3, 0)]);
        assert!(decode_combine(&[1, 0, 0, 0, 9], 3).is_err());
    }
}
