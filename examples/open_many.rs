use std::time::Instant;
fn main() {
    let path = "/tmp/many.zt";
    let mut w = ztensor::Writer::create(path).unwrap();
    for i in 0..10_000 {
        w.add(&format!("layers.{i}.weight"), &[4, 4], &[1.0f32; 16])
            .unwrap();
    }
    w.finish().unwrap();
    let mut xs = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        let r = ztensor::Reader::open(path).unwrap();
        xs.push(t.elapsed().as_secs_f64() * 1e3);
        drop(r);
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    println!("open median {:.2} ms min {:.2}", xs[10], xs[0]);
}
