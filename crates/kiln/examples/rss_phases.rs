//! Peak RSS after each phase of compiling a model (a diagnostic for the
//! memory budget of `kiln bench`): `cargo run -p kiln --example rss_phases MODEL`.
fn hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
                .map(|l| l.to_string())
        })
        .unwrap_or_default()
}
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS")).map(|l| l.to_string()))
        .unwrap_or_default()
}
fn main() {
    let p = std::path::PathBuf::from(std::env::args().nth(1).expect("model path"));
    println!("start      {} {}", hwm(), rss());
    let mut m = kiln::load_model(&p).unwrap();
    println!("loaded     {} {}", hwm(), rss());
    kiln::opt::optimize(&mut m, &kiln::opt::Options::default()).unwrap();
    println!("optimized  {} {}", hwm(), rss());
    let cm = kiln::runtime::CompiledModel::compile(m, &Default::default()).unwrap();
    println!("compiled   {} {}", hwm(), rss());
    let mut st = cm.new_state(1);
    let shape = vec![1usize, 3, 224, 224];
    let x = kiln::ir::Tensor::zeros(kiln::ir::DType::F32, shape).unwrap();
    cm.run(&mut st, vec![x]).unwrap();
    println!("first run  {} {}", hwm(), rss());
}
