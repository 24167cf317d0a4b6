use std::time::Instant;
use ztensor::*;
fn main() {
    let n = 64usize << 20;
    let mut s = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..n / 4)
        .flat_map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = if s % 100 < 80 {
                0f32
            } else {
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            };
            v.to_le_bytes()
        })
        .collect();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let t = Instant::now();
            let enc = zstd_seekable::encode(&data, ZstdOptions::default()).unwrap();
            let e = t.elapsed();
            let t = Instant::now();
            let dec = zstd_seekable::decode(&enc, data.len() as u64).unwrap();
            let d = t.elapsed();
            assert_eq!(dec.len(), data.len());
            let t = Instant::now();
            let mut w = Writer::create("/tmp/zp.zt").unwrap();
            let opts = PartOptions {
                etype: ElementType::plain(DType::F32),
                compression: Some(ZstdOptions::default()),
                digest: Some(DigestAlg::Xxh3),
            };
            w.add_bytes_with("t", &[n as u64 / 4], &data, &opts, None)
                .unwrap();
            w.finish().unwrap();
            let wt = t.elapsed();
            println!(
                "threads={threads} encode {:?} decode {:?} writer {:?}",
                e, d, wt
            );
        });
    }
}
