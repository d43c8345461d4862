fn main() {
    println!("specreplay: under construction");
}
